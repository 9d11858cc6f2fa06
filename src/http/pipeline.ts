import type { IncomingMessage, ServerResponse } from 'node:http';
import { XksError, isXksError } from '../errors';
import type { KeyStoreRuntime } from '../config/load';
import { isEngineError } from '../engine/errors';
import { fromEngineError } from '../xks/engine-errors';
import { createContext, FinishedContext, RequestContext } from './context';
import { auditRequest, countRequest, logRequest, ResponseListener } from './outcome';
import { shedOnEventLoopOverload } from './overload';
import { RateLimiter } from './quota';
import { errorReply, Reply, sendJson } from './reply';
import type { HandlerServices, PipelineServices } from './services';
import { admit, authenticate, authorize, execute, parse, readRequestBody, routeRequest } from './steps';

export type { HandlerServices } from './services';

type Step = (ctx: RequestContext) => void | Promise<void>;

/**
 * The XKS request path, in order (route comes first, outside the list: it decides whether there is a
 * request context at all). execute runs last, under the deadline. A new check is one more step here;
 * a new consumer of finished requests is one more response listener (src/http/outcome.ts); a new
 * non-XKS endpoint belongs on the ops port (src/ops.ts), not here.
 */
const STEPS: readonly Step[] = [shedOnEventLoopOverload, readRequestBody, authenticate, admit, parse, authorize];

async function run(ctx: RequestContext): Promise<object> {
  for (const step of STEPS) {
    const pending = step(ctx);
    if (pending) await pending;
  }
  return execute(ctx);
}

/** XksError passes; an engine failure maps to its spec error; anything else is a bug, logged, and InternalException. */
function toXksError(e: unknown, ctx: RequestContext): XksError {
  if (isXksError(e)) return e;
  if (isEngineError(e)) return fromEngineError(e);
  ctx.server.logger.error({ err: e instanceof Error ? e.message : String(e), operation: ctx.route.operation }, 'unexpected error');
  return new XksError('InternalException', 'internal error');
}

export function createXksHandler(svc: HandlerServices): (req: IncomingMessage, res: ServerResponse) => void {
  const quotas = new WeakMap<KeyStoreRuntime, RateLimiter>();
  const server: PipelineServices = {
    ...svc,
    quotaFor(ks) {
      if (ks.requestsPerSecond <= 0) return undefined;
      let q = quotas.get(ks);
      if (!q) quotas.set(ks, (q = new RateLimiter(ks.requestsPerSecond / svc.workers)));
      return q;
    },
  };
  const listeners: ResponseListener[] = [countRequest(svc.metrics), logRequest(svc.logger)];
  if (svc.audit) listeners.push(auditRequest(svc.audit, svc.logger));

  function finish(ctx: RequestContext, reply: Reply, error: XksError | undefined): void {
    if (!ctx.res.headersSent && !ctx.res.destroyed) sendJson(ctx.res, reply, svc.draining());
    ctx.outcome = { status: reply.status, error, seconds: (performance.now() - ctx.started) / 1000 };
    for (const listener of listeners) listener(ctx as FinishedContext);
  }

  return (req, res) => {
    const started = performance.now();
    if (req.method === 'GET' && req.url === '/healthz') {
      req.resume();
      const ok = svc.readiness().ready;
      sendJson(res, { status: ok ? 200 : 503, payload: { status: ok ? 'ok' : 'unavailable' } });
      return;
    }
    const runtime = svc.runtime();
    const routed = routeRequest(req, runtime);
    if ('status' in routed) {
      req.resume();
      sendJson(res, routed);
      return;
    }
    const ctx = createContext(server, req, res, started, runtime, routed.route, routed.keyStore);
    run(ctx).then(
      (payload) => finish(ctx, { status: 200, payload }, undefined),
      (e: unknown) => {
        const error = toXksError(e, ctx);
        finish(ctx, errorReply(error), error);
      },
    );
  };
}
