import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { XksError, isXksError } from '../errors';
import type { KeyStoreRuntime } from '../config/load';
import { isEngineError } from '../engine/errors';
import { fromEngineError } from '../xks/engine-errors';
import { AuthenticationFailed } from './auth-failures';
import { FloodLog } from './flood-log';
import { createContext, FinishedContext, Outcome, RequestContext } from './context';
import { auditRequest, countRequest, logRequest, ResponseListener } from './outcome';
import { Shed, shedOnEventLoopOverload } from './overload';
import { RateLimiter } from './quota';
import { ClientClosed, errorReply, hasBody, Reply, sendJson } from './reply';
import type { HandlerServices, PipelineServices } from './services';
import { admit, authenticate, authorize, execute, parse, preAuthenticate, readRequestBody, routeRequest } from './steps';

export type { HandlerServices } from './services';

type Step = (ctx: RequestContext) => void | Promise<void>;

/**
 * The XKS request path, in order (route comes first, outside the list: it decides whether there is a
 * request context at all). execute runs last, under the deadline. A new check is one more step here;
 * a new consumer of finished requests is one more response listener (src/http/outcome.ts); a new
 * non-XKS endpoint belongs on the ops port (src/ops.ts), not here.
 */
const STEPS: readonly Step[] = [preAuthenticate, shedOnEventLoopOverload, readRequestBody, authenticate, admit, parse, authorize];

/**
 * Failed authentications and shed requests get this many detailed log and audit lines per key store
 * per second; the rest are counted into one summary line per interval. The metrics count every one. A
 * flood of bad signatures (thousands a second), or an overload that sheds thousands a second, then
 * writes a few KB/s, not MB/s, and does not spend on lines the CPU it is short of.
 */
const DETAIL_PER_SECOND = 10;
const SUMMARY_EVERY_MS = 10_000;

/**
 * The XKS port's request listener, and `checkContinue` for the server's 'checkContinue' event:
 * without a listener there, Node answers 100 Continue itself, even to a request about to be refused.
 * With it, 100 Continue is sent only once routing and the pre-body checks passed.
 */
export type XksHandler = RequestListener & {
  checkContinue: RequestListener;
  /** Writes what is still pending (the summaries of suppressed authentication failures and sheds); call once no request is in flight, before the audit closes. */
  flush(): void;
};

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

const clientGone = (ctx: RequestContext): boolean => ctx.res.destroyed || ctx.req.socket.destroyed;

/** Calls back once the answer was handed to the connection in full (true), or cut off by a close (false). */
function whenSettled(res: ServerResponse, sent: boolean, settled: (delivered: boolean) => void): void {
  if (res.writableFinished) return settled(true);
  if (!sent || res.destroyed) return settled(false);
  const onFinish = (): void => done(true);
  const onClose = (): void => done(false);
  const done = (delivered: boolean): void => {
    res.off('finish', onFinish);
    res.off('close', onClose);
    settled(delivered);
  };
  res.on('finish', onFinish);
  res.on('close', onClose);
}

/** An answer given before the body was read: the connection closes rather than read a body that has no use. */
function answerUnread(req: IncomingMessage, res: ServerResponse, reply: Reply, draining: boolean): void {
  const unread = hasBody(req);
  if (!unread) req.resume();
  sendJson(res, reply, draining || unread);
}

export function createXksHandler(svc: HandlerServices): XksHandler {
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
  // Listeners that need to know whether the answer was delivered run once it is known; the audit's
  // main line is written before the answer leaves (src/http/outcome.ts, auditRequest).
  const listeners: ResponseListener[] = [countRequest(svc.metrics), logRequest(svc.logger)];
  const beforeAnswer: ResponseListener[] = [];
  if (svc.audit) {
    const audit = auditRequest(svc.audit, svc.logger);
    beforeAnswer.push(audit.beforeAnswer);
    listeners.push(audit.afterAnswer);
  }
  const floodLog = <K extends string>(event: string, message: string): FloodLog<K> =>
    new FloodLog<K>({
      perSecond: DETAIL_PER_SECOND,
      summaryEveryMs: SUMMARY_EVERY_MS,
      summary: (s) => {
        svc.logger.warn(s, message);
        try {
          svc.audit?.append({ event, ...s });
        } catch (e) {
          svc.logger.error({ err: (e as Error).message }, 'audit log write failed');
        }
      },
    });
  const authFailures = floodLog('auth-failures-suppressed', 'authentication failures suppressed');
  const sheds = floodLog('shed-requests-suppressed', 'shed requests suppressed');
  const suppress = (keyStore: string, error: XksError | undefined): boolean =>
    error instanceof AuthenticationFailed ? !authFailures.admit(keyStore, error.kind) : error instanceof Shed ? !sheds.admit(keyStore, error.reason) : false;

  /** `reply` undefined: the client left before its body was read, and there is no one to answer. */
  function finish(ctx: RequestContext, reply: Reply | undefined, error: XksError | undefined): void {
    const seconds = (performance.now() - ctx.started) / 1000;
    const gone = reply === undefined || clientGone(ctx);
    const sent = !gone && !ctx.res.headersSent;
    const outcome: Outcome = {
      status: reply?.status,
      error,
      seconds,
      clientAborted: reply === undefined ? 'body' : gone ? 'answer' : undefined,
      delivered: undefined,
      suppressed: suppress(ctx.keyStore.name, error),
    };
    ctx.outcome = outcome;
    for (const listener of beforeAnswer) listener(ctx as FinishedContext);
    if (sent) sendJson(ctx.res, reply as Reply, svc.draining() || !ctx.bodyRead);
    whenSettled(ctx.res, sent, (delivered) => {
      outcome.delivered = delivered;
      // Closed while the answer was on its way: processed, but the client never had it.
      if (!delivered) outcome.clientAborted ??= 'answer';
      for (const listener of listeners) listener(ctx as FinishedContext);
    });
  }

  function handle(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): void {
    const started = performance.now();
    if (req.method === 'GET' && req.url === '/healthz') {
      const ok = svc.readiness().ready;
      answerUnread(req, res, { status: ok ? 200 : 503, payload: { status: ok ? 'ok' : 'unavailable' } }, false);
      return;
    }
    const runtime = svc.runtime();
    const routed = routeRequest(req, runtime);
    if ('status' in routed) {
      answerUnread(req, res, routed, svc.draining());
      return;
    }
    const ctx = createContext(server, req, res, started, runtime, routed.route, routed.keyStore, expectsContinue);
    run(ctx).then(
      (payload) => finish(ctx, { status: 200, payload }, undefined),
      (e: unknown) => {
        // A client gone while its body was read (or drained for a refusal): no one to answer, but a
        // refusal already decided still counts as that refusal (bounded lines for a shed).
        if (e instanceof ClientClosed || (!ctx.bodyRead && clientGone(ctx))) return finish(ctx, undefined, ctx.refusal);
        const error = toXksError(e, ctx);
        finish(ctx, errorReply(error), error);
      },
    );
  }

  const handler = ((req, res) => handle(req, res, false)) as XksHandler;
  handler.checkContinue = (req, res) => handle(req, res, true);
  handler.flush = () => {
    authFailures.flush();
    sheds.flush();
  };
  return handler;
}
