import type { IncomingMessage, ServerResponse } from 'node:http';
import { RETRYABLE_ERRORS, XksError, XksErrorName, isXksError } from '../errors';
import type { AuditLog } from '../audit/log';
import type { KeyStoreRuntime, RuntimeConfig } from '../config/load';
import { Deadline } from '../deadline';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import { verifySigV4 } from '../sigv4/verify';
import { OPERATIONS, OperationServices, RequestRecord } from '../xks/operations';
import { parseJsonObject } from '../xks/requests';
import { RateLimiter } from './quota';
import { route } from './router';

export interface HandlerServices extends OperationServices {
  logger: Logger;
  metrics: Metrics;
  /** The configuration in force now; reloads swap it between requests. */
  runtime(): RuntimeConfig;
  /** Processes sharing the key stores' quotas. */
  workers: number;
  /** True when the process can serve key operations (HSM connected, config valid). */
  ready(): boolean;
  /** One hash-chained line per processed request. */
  audit?: AuditLog;
  /** True once shutdown began: answers then close their connection so that no client reuses it. */
  draining(): boolean;
}

type Reply = { status: number; payload: object; headers?: Record<string, string> };

function sendJson(res: ServerResponse, reply: Reply, draining = false): void {
  const body = JSON.stringify(reply.payload);
  // A keep-alive client could send its next request just as the socket closes, and the reset would
  // also discard this answer: "Connection: close" makes the client stop using the socket first.
  if (draining) res.shouldKeepAlive = false;
  res.writeHead(reply.status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    ...reply.headers,
  });
  res.end(body);
}

const errorReply = (e: XksError, headers?: Record<string, string>): Reply => ({ status: e.status, payload: e.toBody(), headers });

/** Reads the body up to `max` bytes; a larger body is refused without buffering it. */
function readBody(req: IncomingMessage, max: number): Promise<Buffer | null> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > max) return Promise.resolve(null);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) over = true;
      else chunks.push(chunk);
    });
    req.on('end', () => resolve(over ? null : chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size)));
    req.on('error', reject);
  });
}

function lenientJson(raw: Buffer): Record<string, unknown> {
  try {
    return parseJsonObject(raw);
  } catch {
    return {};
  }
}

export function createXksHandler(svc: HandlerServices): (req: IncomingMessage, res: ServerResponse) => void {
  const quotas = new WeakMap<KeyStoreRuntime, RateLimiter>();
  const quotaFor = (ks: KeyStoreRuntime): RateLimiter | undefined => {
    if (ks.requestsPerSecond <= 0) return undefined;
    let q = quotas.get(ks);
    if (!q) quotas.set(ks, (q = new RateLimiter(ks.requestsPerSecond / svc.workers)));
    return q;
  };

  async function process(req: IncomingMessage, ks: KeyStoreRuntime, r: Extract<ReturnType<typeof route>, { kind: 'xks' }>, record: RequestRecord): Promise<Reply> {
    const runtime = svc.runtime();
    const raw = await readBody(req, runtime.config.server.maxBodyBytes);
    if (raw === null) {
      throw new XksError('UnsupportedOperationException', `request body exceeds the ${runtime.config.server.maxBodyBytes} bytes this proxy supports`);
    }
    const auth = verifySigV4(
      { method: req.method as string, path: req.url as string, rawHeaders: req.rawHeaders, body: raw },
      { secrets: ks.secrets, regions: ks.regions, clockSkewMs: runtime.config.server.clockSkewSeconds * 1000, now: Date.now() },
    );
    if (!auth.ok) throw new XksError('AuthenticationFailedException', `SigV4 authentication failed: ${auth.reason}`);
    if (ks.status !== 'ENABLED') throw new XksError('InvalidStateException', 'this key store is disabled');
    if (quotaFor(ks)?.tryTake() === false) throw new XksError('ThrottlingException', 'this key store exceeded its request quota');
    // GetHealthStatus has no ValidationException in the spec: a malformed health body is still answered.
    const body = r.operation === 'GetHealthStatus' ? lenientJson(raw) : parseJsonObject(raw);
    raw.fill(0);
    const deadline = new Deadline(runtime.config.limits.deadlineMs);
    try {
      const payload = await OPERATIONS[r.operation](svc, { keyStore: ks, keyId: r.keyId, body, deadline, record });
      return { status: 200, payload };
    } finally {
      deadline.clear();
    }
  }

  return (req, res) => {
    const started = performance.now();
    const url = req.url ?? '/';
    if (req.method === 'GET' && url === '/healthz') {
      req.resume();
      const ok = svc.ready();
      sendJson(res, { status: ok ? 200 : 503, payload: { status: ok ? 'ok' : 'unavailable' } });
      return;
    }
    const r = route(url);
    const runtime = svc.runtime();
    const ks = r.kind === 'xks' ? runtime.keyStores.get(r.pathPrefix) : undefined;
    if (r.kind === 'invalid' || !ks) {
      req.resume();
      sendJson(res, errorReply(new XksError('InvalidUriPathException', r.kind === 'invalid' ? 'the URI path is not an XKS API path' : 'no key store is configured at this path prefix')));
      return;
    }
    if (req.method !== 'POST') {
      req.resume();
      sendJson(res, { status: 405, payload: { errorMessage: `method ${req.method ?? ''} is not allowed; XKS operations use POST` }, headers: { allow: 'POST' } });
      return;
    }
    const record: RequestRecord = {};
    process(req, ks, r, record).then(
      (reply) => finish(reply, undefined),
      (e: unknown) => {
        if (isXksError(e)) return finish(errorReply(e), e);
        svc.logger.error({ err: e instanceof Error ? e.message : String(e), operation: r.operation }, 'unexpected error');
        const internal = new XksError('InternalException', 'internal error');
        finish(errorReply(internal), internal);
      },
    );

    function finish(reply: Reply, error: XksError | undefined): void {
      if (!res.headersSent && !res.destroyed) sendJson(res, reply, svc.draining());
      const seconds = (performance.now() - started) / 1000;
      const errorName: XksErrorName | undefined = error?.errorName;
      svc.metrics.observeRequest(ks!.name, r.kind === 'xks' ? r.operation : 'unknown', errorName, errorName ? RETRYABLE_ERRORS.has(errorName) : false, seconds);
      const m = record.metadata;
      // Request metadata and outcome only: never a body field other than requestMetadata.
      const entry = {
        keyStore: ks!.name,
        operation: r.kind === 'xks' ? r.operation : undefined,
        keyId: r.kind === 'xks' ? r.keyId : undefined,
        keyVersion: record.keyVersion,
        group: record.group,
        decision: record.decision ? (record.decision.allowed ? 'allow' : 'deny') : undefined,
        policyRule: record.decision?.rule,
        kmsRequestId: m?.kmsRequestId,
        kmsOperation: m?.kmsOperation,
        awsPrincipalArn: m?.awsPrincipalArn,
        kmsKeyArn: m?.kmsKeyArn,
        kmsViaService: m?.kmsViaService,
        awsSourceVpc: m?.awsSourceVpc,
        awsSourceVpce: m?.awsSourceVpce,
        status: reply.status,
        outcome: errorName ?? 'success',
        errorMessage: error?.message,
        ms: Math.round(seconds * 100000) / 100,
      };
      svc.logger.info(entry, 'xks request');
      try {
        svc.audit?.append({ event: 'key-operation', ...entry });
      } catch (e) {
        svc.logger.error({ err: (e as Error).message }, 'audit log write failed');
      }
    }
  };
}
