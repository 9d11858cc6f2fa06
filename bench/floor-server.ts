/**
 * The floor for bench/run.ts's `--floor`: what an XKS request cannot do without, served by node:http
 * through real sockets, so that the proxy's CPU per request splits into what the job costs and what the
 * proxy adds. Per request, the product's own code for each must-have: routing, SigV4 (header checks, body
 * hash, signature), the body's JSON and its fields, the key's group policy, the operation itself (the engine,
 * SoftHSM2 inline, and the answer it builds), and the JSON answer. Left out, because the spec does not need
 * them to answer: the request log line, metrics, the deadline and its timer, overload shedding, the read
 * gate, delivery tracking, quotas and error mapping (a request the floor cannot serve gets a bare 500; the
 * bench sends only valid ones). Not a server to deploy: it is what a minimal proxy on node:http would cost.
 *
 *   node dist-bench/bench/floor-server.js --config CONFIG.yaml --port PORT [--workers N]
 *
 * Each process opens the engine through ProxyApp (its own XKS listener on a port nobody uses, the ops
 * port off), so that sessions, keys and IV source are what the proxy would have.
 */
import http from 'node:http';
import { ProxyApp } from '../src/app';
import { loadConfigFile } from '../src/config/load';
import { silentLogger } from '../src/log';
import { floorHandler } from './lib/floor';
import { serveOnWorkers, serverArg } from './lib/server-processes';

async function serve(): Promise<void> {
  const runtime = loadConfigFile(serverArg('config', ''));
  const cfg = runtime.config;
  // The floor's own process: the proxy's listener on a port nobody uses, no ops port, no warm-up traffic.
  // (In place: a spread copy would lose the PINs, which RuntimeConfig keeps non-enumerable.)
  Object.assign(cfg.server, { port: 0, workers: 1, warmUpRequests: 0 });
  Object.assign(cfg.ops, { enabled: false });
  const app = await ProxyApp.start({ runtime, logger: silentLogger });
  const server = http.createServer(floorHandler(runtime, { engine: app.engine, health: app.health }));
  server.keepAliveTimeout = cfg.server.keepAliveTimeoutMs;
  server.listen(Number(serverArg('port', '0')), '127.0.0.1');
  process.once('SIGTERM', () => server.close(() => void app.stop().finally(() => process.exit(0))));
}

serveOnWorkers(Math.max(1, Number(serverArg('workers', '1'))), serve);
