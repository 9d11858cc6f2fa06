import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { XksError, isXksError } from '../errors';
import { isEngineError } from '../engine/errors';
import { fromEngineError } from '../xks/engine-errors';
import { OPERATIONS } from '../xks/operations';
import { AuthenticationFailed } from './auth-failures';
import { FloodLog } from './flood-log';
import { bodyWasRead, Finished, Flight, Outcome, Routed, Stage } from './context';
import { appendAudit, auditRequest, countRequest, logRequest, ResponseListener } from './outcome';
import { Shed } from './overload';
import { ClientClosed, errorReply, hasBody, Reply, sendJson } from './reply';
import type { HandlerServices } from './services';
import { routeRequest, serve } from './steps';

export type { HandlerServices } from './services';

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

/** XksError passes; an engine failure maps to its spec error; anything else is a bug, logged, and InternalException. */
function toXksError(e: unknown, routed: Routed): XksError {
  if (isXksError(e)) return e;
  if (isEngineError(e)) return fromEngineError(e);
  routed.server.logger.error({ err: e instanceof Error ? e.message : String(e), operation: routed.route.operation }, 'unexpected error');
  return new XksError('InternalException', 'internal error');
}

const clientGone = (routed: Routed): boolean => routed.res.destroyed || routed.req.socket.destroyed;

/** Whether the whole body was read: by the stage the request reached, or drained by a shed that refused it. */
const bodyRead = (reached: Stage, e: unknown): boolean => bodyWasRead(reached) || (e instanceof Shed && e.body === 'drained');

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
      now: svc.now,
      summary: (s) => {
        svc.logger.warn(s, message);
        if (svc.audit) appendAudit(svc.audit, svc.logger, { event, ...s });
      },
    });
  const authFailures = floodLog('auth-failures-suppressed', 'authentication failures suppressed');
  const sheds = floodLog('shed-requests-suppressed', 'shed requests suppressed');
  const suppress = (keyStore: string, error: XksError | undefined): boolean =>
    error instanceof AuthenticationFailed ? !authFailures.admit(keyStore, error.kind) : error instanceof Shed ? !sheds.admit(keyStore, error.reason) : false;

  /** `reply` undefined: the client left before its body was read, and there is no one to answer. */
  function finish({ routed, reached }: Flight, reply: Reply | undefined, error: XksError | undefined): void {
    const seconds = (performance.now() - routed.started) / 1000;
    const gone = reply === undefined || clientGone(routed);
    const sent = !gone && !routed.res.headersSent;
    const outcome: Outcome = {
      status: reply?.status,
      error,
      seconds,
      clientAborted: reply === undefined ? 'body' : gone ? 'answer' : undefined,
      delivered: undefined,
      suppressed: suppress(routed.keyStore.name, error),
    };
    const finished: Finished = { routed, reached, outcome, summary: undefined };
    for (const listener of beforeAnswer) listener(finished);
    if (sent) sendJson(routed.res, reply, svc.draining() || !bodyRead(reached, error));
    whenSettled(routed.res, sent, (delivered) => {
      outcome.delivered = delivered;
      // Closed while the answer was on its way: processed, but the client never had it.
      if (!delivered) outcome.clientAborted ??= 'answer';
      for (const listener of listeners) listener(finished);
    });
  }

  /**
   * A client gone while its body was read (or drained for a shed) leaves no one to answer: its outcome
   * is ClientAborted, but a shed already decided still counts as that shed (bounded lines for a shed).
   */
  function refuse(flight: Flight, e: unknown): void {
    const shed = e instanceof Shed ? e : undefined;
    if (e instanceof ClientClosed || shed?.body === 'client-left' || (!bodyRead(flight.reached, e) && clientGone(flight.routed))) return finish(flight, undefined, shed);
    const error = toXksError(e, flight.routed);
    finish(flight, errorReply(error), error);
  }

  function handle(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): void {
    const started = performance.now();
    if (req.method === 'GET' && req.url === '/healthz') {
      const ok = svc.readiness().ready;
      answerUnread(req, res, { status: ok ? 200 : 503, payload: { status: ok ? 'ok' : 'unavailable' } }, false);
      return;
    }
    const routed = routeRequest(svc, req, res, started, svc.runtime(), expectsContinue);
    if ('status' in routed) {
      answerUnread(req, res, routed, svc.draining());
      return;
    }
    const flight: Flight = { routed, reached: routed };
    serve(flight, OPERATIONS[routed.route.operation]).then(
      (payload) => finish(flight, { status: 200, payload }, undefined),
      (e: unknown) => refuse(flight, e),
    );
  }

  const handler: RequestListener = (req, res) => handle(req, res, false);
  return Object.assign(handler, {
    checkContinue: (req: IncomingMessage, res: ServerResponse) => handle(req, res, true),
    flush: () => {
      authFailures.flush();
      sheds.flush();
    },
  });
}
