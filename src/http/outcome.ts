import { RETRYABLE_ERRORS } from '../errors';
import type { AuditEvent, AuditLog } from '../audit/log';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import { METADATA_FIELDS } from '../xks/requests';
import { AuthenticationFailed } from './auth-failures';
import type { FinishedContext } from './context';
import { Shed } from './overload';

/**
 * Response listeners: each reads the finished request context (its outcome above all) and does one
 * job. A new consumer of finished requests (a tracing span, say) is one more listener here.
 */
export type ResponseListener = (ctx: FinishedContext) => void;

/**
 * What the request log and the audit trail record: request metadata and outcome only, never a body
 * field other than requestMetadata. Built once per request, shared by both.
 */
export function requestSummary(ctx: FinishedContext): AuditEvent {
  if (ctx.summary) return ctx.summary;
  const { outcome } = ctx;
  const entry: AuditEvent = {
    keyStore: ctx.keyStore.name,
    operation: ctx.route.operation,
    keyId: ctx.route.keyId,
    keyVersion: ctx.keyVersion,
    group: ctx.group,
    decision: ctx.decision ? (ctx.decision.allowed ? 'allow' : 'deny') : undefined,
    policyRule: ctx.decision?.rule,
  };
  for (const f of METADATA_FIELDS) entry[f.name] = ctx.metadata?.[f.name];
  const { error } = outcome;
  entry.status = outcome.status;
  entry.outcome = outcome.clientAborted === 'body' ? 'ClientAborted' : (error?.errorName ?? 'success');
  entry.errorMessage = error?.message;
  // The answer says only "authentication failed"; the log and audit keep which check and why.
  if (error instanceof AuthenticationFailed) {
    entry.authFailure = error.kind;
    entry.authDetail = error.detail;
  }
  // Refused before its signature was checked: the key id is the caller's claim, not an authenticated one.
  if (error instanceof Shed) entry.signatureChecked = false;
  entry.clientAborted = outcome.clientAborted;
  entry.ms = Math.round(outcome.seconds * 100000) / 100;
  ctx.summary = entry;
  return entry;
}

export const countRequest =
  (metrics: Metrics): ResponseListener =>
  ({ keyStore, route, outcome }) => {
    if (outcome.clientAborted) metrics.clientAborts.inc({ key_store: keyStore.name, stage: outcome.clientAborted });
    // Nothing was processed for a client that left mid-body: no outcome of the proxy's, and its
    // latency is how long the client stalled.
    if (outcome.clientAborted === 'body') return;
    const { error } = outcome;
    if (error instanceof AuthenticationFailed) metrics.authFailures.inc({ key_store: keyStore.name, reason: error.kind });
    const errorName = error?.errorName;
    metrics.observeRequest(keyStore.name, route.operation, errorName, errorName ? RETRYABLE_ERRORS.has(errorName) : false, outcome.seconds);
  };

export const logRequest =
  (logger: Logger): ResponseListener =>
  (ctx) => {
    if (!ctx.outcome.suppressed) logger.info({ ...requestSummary(ctx), delivered: ctx.outcome.delivered }, 'xks request');
  };

function append(audit: AuditLog, logger: Logger, event: AuditEvent): void {
  try {
    audit.append(event);
  } catch (e) {
    logger.error({ err: (e as Error).message }, 'audit log write failed');
  }
}

/**
 * The audit keeps two promises: an answered request's line is on disk before the answer leaves (so
 * this listener runs before the answer is sent, synchronously), and the trail says whether the answer
 * reached the client: an answer cut off by a close gets a second line, `answer-not-delivered`, naming
 * the request. A line with no such follow-up was handed to the connection in full.
 */
export const auditRequest = (audit: AuditLog, logger: Logger): { beforeAnswer: ResponseListener; afterAnswer: ResponseListener } => ({
  beforeAnswer: (ctx) => {
    if (ctx.outcome.suppressed) return;
    const delivered = ctx.outcome.clientAborted === 'body' ? false : undefined;
    append(audit, logger, { event: 'key-operation', ...requestSummary(ctx), delivered });
  },
  afterAnswer: (ctx) => {
    const { outcome } = ctx;
    if (outcome.suppressed || outcome.delivered !== false || outcome.clientAborted === 'body') return;
    const s = requestSummary(ctx);
    append(audit, logger, { event: 'answer-not-delivered', keyStore: s.keyStore, operation: s.operation, keyId: s.keyId, kmsRequestId: s.kmsRequestId, status: s.status });
  },
});
