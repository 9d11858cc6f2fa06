import type http from 'node:http';
import type { RuntimeConfig } from '../../src/config/load';
import { Deadline } from '../../src/deadline';
import { readBody, sendJson } from '../../src/http/reply';
import { route } from '../../src/http/router';
import { completeSigV4, preverifySigV4 } from '../../src/sigv4/verify';
import { OPERATIONS, type OperationServices } from '../../src/xks/operations';
import { parseJsonObject } from '../../src/xks/requests';

/** One budget for every request, never reached: the engine wants one; the floor sets no timer per request. */
const NO_DEADLINE = new Deadline(2 ** 31 - 1);
NO_DEADLINE.clear();

/**
 * The floor's request listener (bench/floor-server.ts): an XKS request's must-haves, each the product's
 * own code (routing, SigV4, the body's JSON and fields, the key's group policy, the operation with its
 * engine call, the JSON answer), and nothing else. A request it cannot serve gets a bare 500.
 */
export function floorHandler(runtime: RuntimeConfig, services: Pick<OperationServices, 'engine' | 'health'>): http.RequestListener {
  const cfg = runtime.config;
  const svc: OperationServices = {
    ...services,
    identity: { vendor: cfg.proxy.vendor, model: cfg.proxy.model ?? 'floor', fleetSize: cfg.proxy.fleetSize },
    limits: cfg.limits,
  };
  async function handle(req: http.IncomingMessage): Promise<object> {
    const url = req.url ?? '/';
    const r = route(url);
    const keyStore = r.kind === 'xks' ? runtime.keyStores.get(r.pathPrefix) : undefined;
    if (r.kind !== 'xks' || !keyStore) throw new Error('no such path');
    const pre = preverifySigV4(req.rawHeaders, { secrets: keyStore.secrets, regions: keyStore.regions, clockSkewMs: cfg.server.clockSkewSeconds * 1000, now: Date.now() });
    if (!pre.ok) throw new Error(pre.reason);
    const body = await readBody(req, cfg.server.maxBodyBytes);
    if (body === null) throw new Error('body too large');
    const auth = completeSigV4(pre, { method: 'POST', path: url, body });
    if (!auth.ok) throw new Error(auth.reason);
    const op = OPERATIONS[r.operation];
    const request = op.parse(parseJsonObject(body), cfg.limits);
    // One generic call per operation: each spec's parse, authorize and execute agree on its own types.
    const grant = op.authorize(request as never, r.keyId, keyStore);
    return op.execute(svc, request as never, grant as never, { deadline: NO_DEADLINE, keyVersion: undefined });
  }
  return (req, res) => {
    handle(req).then(
      (payload) => sendJson(res, { status: 200, payload }),
      (e: unknown) => sendJson(res, { status: 500, payload: { errorName: 'InternalException', errorMessage: e instanceof Error ? e.message : 'failed' } }),
    );
  };
}
