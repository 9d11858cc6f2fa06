import { RETRYABLE_ERRORS } from '../errors';
import type { AuditEvent, AuditLog } from '../audit/log';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import { METADATA_FIELDS } from '../xks/requests';
import { AuthenticationFailed } from './auth-failures';
import { authorizationOf, Finished, metadataOf } from './context';
import { Shed } from './overload';

/**
 * Response listeners: each reads a finished request (its outcome above all, and the stage it reached)
 * and does one job. A new consumer of finished requests (a tracing span, say) is one more listener here.
 */
export type ResponseListener = (finished: Finished) => void;

/**
 * What the request log and the audit trail record: request metadata and outcome only, never a body
 * field other than requestMetadata. Built once per request, shared by both.
 */
function requestSummary(finished: Finished): AuditEvent {
  if (finished.summary) return finished.summary;
  const { routed, reached, outcome } = finished;
  const { error } = outcome;
  const authorization = authorizationOf(reached, error);
  const entry: AuditEvent = {
    keyStore: routed.keyStore.name,
    operation: routed.route.operation,
    keyId: routed.route.keyId,
    keyVersion: reached.stage === 'executing' ? reached.keyVersion : undefined,
    group: authorization?.key.group.name,
    decision: authorization ? (authorization.decision.allowed ? 'allow' : 'deny') : undefined,
    policyRule: authorization?.decision.rule,
  };
  const metadata = metadataOf(reached);
  for (const f of METADATA_FIELDS) entry[f.name] = metadata?.[f.name];
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
  finished.summary = entry;
  return entry;
}

export const countRequest =
  (metrics: Metrics): ResponseListener =>
  ({ routed: { keyStore, route }, outcome }) => {
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
  (finished) => {
    if (!finished.outcome.suppressed) logger.info({ ...requestSummary(finished), delivered: finished.outcome.delivered }, 'xks request');
  };

/** An audit write that fails is logged; the request it records is answered regardless. */
export function appendAudit(audit: AuditLog, logger: Logger, event: AuditEvent): void {
  try {
    audit.append(event);
  } catch (e) {
    logger.error({ err: e instanceof Error ? e.message : String(e) }, 'audit log write failed');
  }
}

/**
 * The audit keeps two promises: an answered request's line is on disk before the answer leaves (so
 * this listener runs before the answer is sent, synchronously), and the trail says whether the answer
 * reached the client: an answer cut off by a close gets a second line, `answer-not-delivered`, naming
 * the request. A line with no such follow-up was handed to the connection in full.
 */
export const auditRequest = (audit: AuditLog, logger: Logger): { beforeAnswer: ResponseListener; afterAnswer: ResponseListener } => ({
  beforeAnswer: (finished) => {
    if (finished.outcome.suppressed) return;
    const delivered = finished.outcome.clientAborted === 'body' ? false : undefined;
    appendAudit(audit, logger, { event: 'key-operation', ...requestSummary(finished), delivered });
  },
  afterAnswer: (finished) => {
    const { outcome } = finished;
    if (outcome.suppressed || outcome.delivered !== false || outcome.clientAborted === 'body') return;
    const s = requestSummary(finished);
    appendAudit(audit, logger, { event: 'answer-not-delivered', keyStore: s.keyStore, operation: s.operation, keyId: s.keyId, kmsRequestId: s.kmsRequestId, status: s.status });
  },
});
