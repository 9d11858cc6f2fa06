import type { IncomingMessage } from 'node:http';
import { XksError } from '../errors';
import type { RuntimeConfig, KeyStoreRuntime } from '../config/load';
import { Deadline } from '../deadline';
import { completeSigV4, preverifySigV4, SigV4Headers } from '../sigv4/verify';
import { authorizeKey } from '../xks/authorize';
import { OPERATIONS, OperationSpec } from '../xks/operations';
import { parseExternalKeyId, parseJsonObject, RequestMetadata } from '../xks/requests';
import { AuthenticationFailed } from './auth-failures';
import type { RequestContext } from './context';
import { noteHsmShed } from './overload';
import { declaresMoreThan, readBody, Reply } from './reply';
import { route, XksRoute } from './router';

/**
 * The steps of an XKS request, each a function of the request context. A step refuses a request by
 * throwing an XksError; the pipeline (src/http/pipeline.ts) runs them in order and turns the result
 * into one outcome.
 */

/**
 * Before any body is read: an unknown path or a wrong method is answered at once. These answers have no
 * key store to count them under, so they go to no response listener (as before the pipeline existed).
 */
export function routeRequest(req: IncomingMessage, runtime: RuntimeConfig): { route: XksRoute; keyStore: KeyStoreRuntime } | Reply {
  const r = route(req.url ?? '/');
  const keyStore = r.kind === 'xks' ? runtime.keyStores.get(r.pathPrefix) : undefined;
  if (r.kind === 'invalid' || !keyStore) {
    const why = r.kind === 'invalid' ? 'the URI path is not an XKS API path' : 'no key store is configured at this path prefix';
    const e = new XksError('InvalidUriPathException', why);
    return { status: e.status, payload: e.toBody() };
  }
  if (req.method !== 'POST') {
    return { status: 405, payload: { errorMessage: `method ${req.method ?? ''} is not allowed; XKS operations use POST` }, headers: { allow: 'POST' } };
  }
  return { route: r, keyStore };
}

/**
 * What the Authorization header alone can refuse (scope, region, date and skew, signed header set,
 * live access key id), before any body byte is read: a refusal here closes the connection unread.
 */
export function preAuthenticate(ctx: RequestContext): void {
  const { req, keyStore, runtime } = ctx;
  const pre = preverifySigV4(req.rawHeaders, {
    secrets: keyStore.secrets,
    regions: keyStore.regions,
    clockSkewMs: runtime.config.server.clockSkewSeconds * 1000,
    now: Date.now(),
  });
  if (!pre.ok) throw new AuthenticationFailed(pre);
  ctx.sigv4 = pre;
}

/**
 * A declared size over the limit is refused before anything is read (and before 100 Continue); a
 * chunked body that grows past it stops being read where it crosses.
 */
export async function readRequestBody(ctx: RequestContext): Promise<void> {
  const max = ctx.runtime.config.server.maxBodyBytes;
  const tooLarge = (): XksError => new XksError('UnsupportedOperationException', `request body exceeds the ${max} bytes this proxy supports`);
  if (declaresMoreThan(ctx.req, max)) throw tooLarge();
  if (ctx.expectsContinue) ctx.res.writeContinue();
  const raw = await readBody(ctx.req, max);
  if (raw === null) throw tooLarge();
  ctx.body = raw;
  ctx.bodyRead = true;
}

/** The body hash and the signature, over the header parse preAuthenticate kept. */
export function authenticate(ctx: RequestContext): void {
  const { req } = ctx;
  const auth = completeSigV4(ctx.sigv4 as SigV4Headers, { method: req.method as string, path: req.url as string, body: ctx.body as Buffer });
  if (!auth.ok) throw new AuthenticationFailed(auth);
}

/** Whether the key store takes requests now: its status, then its quota. */
export function admit(ctx: RequestContext): void {
  if (ctx.keyStore.status !== 'ENABLED') throw new XksError('InvalidStateException', 'this key store is disabled');
  if (ctx.server.quotaFor(ctx.keyStore)?.tryTake() === false) throw new XksError('ThrottlingException', 'this key store exceeded its request quota');
}

const operationOf = (ctx: RequestContext): OperationSpec<unknown> => OPERATIONS[ctx.route.operation];

export function parse(ctx: RequestContext): void {
  const raw = ctx.body as Buffer;
  const op = operationOf(ctx);
  ctx.body = undefined;
  let body: Record<string, unknown>;
  try {
    body = parseJsonObject(raw);
  } finally {
    raw.fill(0);
  }
  const request = op.parse(body, ctx.server.limits);
  ctx.request = request;
  ctx.metadata = request.metadata;
  if (op.need(request) !== 'none') ctx.keyId = parseExternalKeyId(ctx.route.keyId);
}

export function authorize(ctx: RequestContext): void {
  const need = operationOf(ctx).need(ctx.request);
  if (need === 'none') return;
  // parse validated the whole requestMetadata of a key operation.
  ctx.key = authorizeKey(ctx.keyStore, ctx.keyId as string, ctx.metadata as RequestMetadata, need, ctx);
}

/**
 * The one place the deadline applies: it counts from the request's arrival, and bounds the whole
 * operation (an Encrypt with an integrity check makes two HSM calls under it). The engine gets it too,
 * only so that a wait for an HSM session ends with the budget.
 */
export function execute(ctx: RequestContext): Promise<object> {
  const deadline = new Deadline(ctx.runtime.config.limits.deadlineMs, ctx.started);
  ctx.deadline = deadline;
  const work = operationOf(ctx).execute(ctx.server, ctx.request, ctx).catch((e: unknown) => (noteHsmShed(ctx, e), Promise.reject(e)));
  return deadline.race(work).finally(() => deadline.clear());
}
