import type { IncomingMessage, ServerResponse } from 'node:http';
import { XksError } from '../errors';
import type { RuntimeConfig } from '../config/load';
import { Deadline } from '../deadline';
import { completeSigV4, preverifySigV4 } from '../sigv4/verify';
import type { Grant } from '../xks/authorize';
import type { OperationRequest, OperationSpec } from '../xks/operations';
import { Json, parseJsonObject } from '../xks/requests';
import { AuthenticationFailed } from './auth-failures';
import type { Admitted, Authenticated, Authorized, BodyRead, Executing, Flight, Parsed, PreAuthenticated, Routed } from './context';
import { noteHsmShed, shedOnEventLoopOverload } from './overload';
import { declaresMoreThan, readBody, Reply } from './reply';
import { route } from './router';
import type { HandlerServices } from './services';

/**
 * The XKS request path, top to bottom. Each step takes the stage the one before it returned
 * (src/http/context.ts) and returns the next, or refuses the request by throwing an XksError; `flight`
 * records each stage reached, for the outcome (src/http/pipeline.ts turns the result into the answer
 * and its outcome). Routing comes first, outside: it decides whether there is a request to serve at all.
 * A new check is one more step here; a new consumer of finished requests is one more response listener
 * (src/http/outcome.ts); a new non-XKS endpoint belongs on the ops port (src/ops.ts), not here.
 *
 * Only the body read, a shed, and a quota share awaited from a cluster's primary wait; the other
 * steps are plain calls.
 */
export async function serve<R extends OperationRequest, G extends Grant>(flight: Flight, op: OperationSpec<R, G>): Promise<object> {
  const pre = (flight.reached = preAuthenticate(flight.routed));
  const shed = shedOnEventLoopOverload(pre);
  if (shed) await shed;
  const read = (flight.reached = await readRequestBody(pre));
  const authenticated = (flight.reached = authenticate(read));
  const admission = admit(authenticated);
  const admitted = (flight.reached = admission instanceof Promise ? await admission : admission);
  const parsed = (flight.reached = parse(admitted, op));
  const authorized = (flight.reached = authorize(parsed, op));
  return execute((flight.reached = startExecution(authorized)), op);
}

/**
 * Before any body is read: an unknown path or a wrong method is answered at once. These answers have no
 * key store to count them under, so they go to no response listener (as before the pipeline existed).
 */
export function routeRequest(
  server: HandlerServices,
  req: IncomingMessage,
  res: ServerResponse,
  started: number,
  runtime: RuntimeConfig,
  expectsContinue: boolean,
): Routed | Reply {
  const url = req.url ?? '/';
  const r = route(url);
  const keyStore = r.kind === 'xks' ? runtime.keyStores.get(r.pathPrefix) : undefined;
  if (r.kind === 'invalid' || !keyStore) {
    const why = r.kind === 'invalid' ? 'the URI path is not an XKS API path' : 'no key store is configured at this path prefix';
    const e = new XksError('InvalidUriPathException', why);
    return { status: e.status, payload: e.toBody() };
  }
  if (req.method !== 'POST') {
    return { status: 405, payload: { errorMessage: `method ${req.method ?? ''} is not allowed; XKS operations use POST` }, headers: { allow: 'POST' } };
  }
  return { stage: 'routed', server, req, res, url, started, runtime, route: r, keyStore, expectsContinue };
}

/**
 * What the Authorization header alone can refuse (scope, region, date and skew, signed header set,
 * live access key id), before any body byte is read: a refusal here closes the connection unread.
 */
function preAuthenticate(routed: Routed): PreAuthenticated {
  const { keyStore, runtime } = routed;
  const sigv4 = preverifySigV4(routed.req.rawHeaders, {
    secrets: keyStore.secrets,
    regions: keyStore.regions,
    clockSkewMs: runtime.config.server.clockSkewSeconds * 1000,
    now: Date.now(),
  });
  if (!sigv4.ok) throw new AuthenticationFailed(sigv4);
  return { stage: 'pre-authenticated', routed, sigv4 };
}

/**
 * A declared size over the limit is refused before anything is read (and before 100 Continue); a
 * chunked body that grows past it stops being read where it crosses.
 */
async function readRequestBody(pre: PreAuthenticated): Promise<BodyRead> {
  const { routed } = pre;
  const max = routed.runtime.config.server.maxBodyBytes;
  if (declaresMoreThan(routed.req, max)) throw bodyTooLarge(max);
  if (routed.expectsContinue) routed.res.writeContinue();
  const body = await readBody(routed.req, max);
  if (body === null) throw bodyTooLarge(max);
  return { stage: 'body-read', routed, sigv4: pre.sigv4, body };
}

const bodyTooLarge = (max: number): XksError => new XksError('UnsupportedOperationException', `request body exceeds the ${max} bytes this proxy supports`);

/** The body hash and the signature, over the header parse preAuthenticate kept. Routing admitted only POST. */
function authenticate(read: BodyRead): Authenticated {
  const { routed, body } = read;
  const auth = completeSigV4(read.sigv4, { method: 'POST', path: routed.url, body });
  if (!auth.ok) throw new AuthenticationFailed(auth);
  return { stage: 'authenticated', routed, body };
}

/** Whether the key store takes requests now: its status, then its quota (a cluster worker may wait for its share). */
function admit(authenticated: Authenticated): Admitted | Promise<Admitted> {
  const { routed } = authenticated;
  if (routed.keyStore.status !== 'ENABLED') throw new XksError('InvalidStateException', 'this key store is disabled');
  const taken = routed.server.quotas.take(routed.keyStore);
  if (taken === true) return { stage: 'admitted', routed, body: authenticated.body };
  if (taken === false) throw overQuota();
  return taken.then((ok) => {
    if (!ok) throw overQuota();
    return { stage: 'admitted', routed, body: authenticated.body };
  });
}

const overQuota = (): XksError => new XksError('ThrottlingException', 'this key store exceeded its request quota');

/** The body becomes the operation's typed request; the raw bytes (which may hold plaintext) are zeroed. */
function parse<R extends OperationRequest, G extends Grant>(admitted: Admitted, op: OperationSpec<R, G>): Parsed<R> {
  const { routed, body: raw } = admitted;
  let body: Json;
  try {
    body = parseJsonObject(raw);
  } finally {
    raw.fill(0);
  }
  return { stage: 'parsed', routed, request: op.parse(body, routed.server.limits) };
}

/** Secondary authorization, the operation's own: a key operation's key, policy, state and usage. */
function authorize<R extends OperationRequest, G extends Grant>(parsed: Parsed<R>, op: OperationSpec<R, G>): Authorized<R, G> {
  const { routed, request } = parsed;
  return { stage: 'authorized', routed, request, grant: op.authorize(request, routed.route.keyId, routed.keyStore) };
}

/**
 * The one place the deadline applies: it counts from the request's arrival, and bounds the whole
 * operation (an Encrypt with an integrity check makes two HSM calls under it). The engine gets it too,
 * only so that a wait for an HSM session ends with the budget.
 */
function startExecution<R extends OperationRequest, G extends Grant>(authorized: Authorized<R, G>): Executing<R, G> {
  const { routed } = authorized;
  const deadline = new Deadline(routed.runtime.config.limits.deadlineMs, routed.started);
  return { stage: 'executing', routed, request: authorized.request, grant: authorized.grant, deadline, keyVersion: undefined };
}

async function execute<R extends OperationRequest, G extends Grant>(run: Executing<R, G>, op: OperationSpec<R, G>): Promise<object> {
  const { deadline } = run;
  try {
    return await deadline.race(op.execute(run.routed.server, run.request, run.grant, run));
  } catch (e) {
    // The deadline's own expiry is no HSM shed (noteHsmShed checks); the session pool's refusal is.
    noteHsmShed(run.routed, deadline, e);
    throw e;
  } finally {
    deadline.clear();
  }
}
