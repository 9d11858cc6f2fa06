/**
 * The floor for bench/run.ts's `--floor`: what an XKS request cannot do without, served by node:http
 * through real sockets, so that the proxy's CPU per request splits into what the job costs and what the
 * proxy adds (bench/lib/floor.ts says what it does per request). Not a server to deploy: it is what a
 * minimal proxy on node:http would cost.
 *
 *   node dist-bench/bench/floor-server.js --config CONFIG.yaml --port PORT [--workers N]
 *
 * Each process opens the product's engine and health monitor as the proxy does (the same token, sessions,
 * IV source and warm-up), and nothing else of it: no metrics, overload guard, read gate or request-path
 * warm-up, whose timers and subscribers are the proxy's extras.
 */
import http from 'node:http';
import { loadConfigFile } from '../src/config/load';
import { openEngine } from '../src/engine/open-engine';
import { ProxyEvents } from '../src/events';
import { HealthMonitor } from '../src/health/monitor';
import { silentLogger } from '../src/log';
import { floorHandler } from './lib/floor';
import { serveOnWorkers, serverArg } from './lib/server-processes';

/** As the proxy warms its HSM path before its port opens (src/app.ts). */
const WARM_UP_ROUNDS = 64;

async function serve(): Promise<void> {
  const runtime = loadConfigFile(serverArg('config', ''));
  const cfg = runtime.config;
  const events = new ProxyEvents();
  const engine = await openEngine({ runtime: () => runtime, maxQueue: cfg.limits.maxQueue, logger: silentLogger, events });
  await engine.warmUp(WARM_UP_ROUNDS);
  const health = new HealthMonitor(engine, { cacheMs: Math.min(...cfg.hsms.map((h) => h.healthCacheMs)), degradedAboveMs: Math.floor(cfg.limits.deadlineMs / 2) }, silentLogger, events);
  await health.refresh();
  health.start();
  const server = http.createServer(floorHandler(runtime, { engine, health }));
  server.keepAliveTimeout = cfg.server.keepAliveTimeoutMs;
  server.listen(Number(serverArg('port', '0')), '127.0.0.1');
  process.once('SIGTERM', () =>
    server.close(() => {
      health.stop();
      void engine.close().finally(() => process.exit(0));
    }),
  );
}

serveOnWorkers(Math.max(1, Number(serverArg('workers', '1'))), serve);
