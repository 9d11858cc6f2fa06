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
import { Deadline } from '../src/deadline';
import { silentLogger } from '../src/log';
import { route } from '../src/http/router';
import { completeSigV4, preverifySigV4 } from '../src/sigv4/verify';
import { OPERATIONS, type OperationServices } from '../src/xks/operations';
import { parseJsonObject } from '../src/xks/requests';
import { serveOnWorkers, serverArg } from './lib/server-processes';

/** One budget for every request, never reached: the engine wants one, the floor sets no timer per request. */
const NO_DEADLINE = new Deadline(2 ** 31 - 1);

const readBody = (req: http.IncomingMessage): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks)));
    req.on('error', reject);
  });

async function serve(): Promise<void> {
  const runtime = loadConfigFile(serverArg('config', ''));
  const cfg = runtime.config;
  // The floor's own process: the proxy's listener on a port nobody uses, no ops port, no warm-up traffic.
  // (In place: a spread copy would lose the PINs, which RuntimeConfig keeps non-enumerable.)
  Object.assign(cfg.server, { port: 0, workers: 1, warmUpRequests: 0 });
  Object.assign(cfg.ops, { enabled: false });
  const app = await ProxyApp.start({ runtime, logger: silentLogger });
  const svc: OperationServices = {
    engine: app.engine,
    health: app.health,
    identity: { vendor: cfg.proxy.vendor, model: cfg.proxy.model ?? 'floor', fleetSize: cfg.proxy.fleetSize },
    limits: cfg.limits,
  };
  const answer = (res: http.ServerResponse, status: number, payload: object): void => {
    const body = JSON.stringify(payload);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };

  async function handle(req: http.IncomingMessage): Promise<object> {
    const url = req.url ?? '/';
    const r = route(url);
    const keyStore = r.kind === 'xks' ? runtime.keyStores.get(r.pathPrefix) : undefined;
    if (r.kind !== 'xks' || !keyStore) throw new Error('no such path');
    const pre = preverifySigV4(req.rawHeaders, { secrets: keyStore.secrets, regions: keyStore.regions, clockSkewMs: cfg.server.clockSkewSeconds * 1000, now: Date.now() });
    if (!pre.ok) throw new Error(pre.reason);
    const body = await readBody(req);
    const auth = completeSigV4(pre, { method: 'POST', path: url, body });
    if (!auth.ok) throw new Error(auth.reason);
    const op = OPERATIONS[r.operation];
    const request = op.parse(parseJsonObject(body), cfg.limits);
    // One generic call per operation: each spec's parse, authorize and execute agree on its own types.
    const grant = op.authorize(request as never, r.keyId, keyStore);
    return op.execute(svc, request as never, grant as never, { deadline: NO_DEADLINE, keyVersion: undefined });
  }

  const server = http.createServer((req, res) => {
    handle(req).then(
      (payload) => answer(res, 200, payload),
      (e: unknown) => answer(res, 500, { errorName: 'InternalException', errorMessage: e instanceof Error ? e.message : 'failed' }),
    );
  });
  server.keepAliveTimeout = cfg.server.keepAliveTimeoutMs;
  server.listen(Number(serverArg('port', '0')), '127.0.0.1');
  process.once('SIGTERM', () => server.close(() => void app.stop().finally(() => process.exit(0))));
}

serveOnWorkers(Math.max(1, Number(serverArg('workers', '1'))), serve);
