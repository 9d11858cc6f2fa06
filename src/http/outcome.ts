import { RETRYABLE_ERRORS } from '../errors';
import type { AuditEvent, AuditLog } from '../audit/log';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import { METADATA_FIELDS } from '../xks/requests';
import type { FinishedContext } from './context';

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
  entry.status = outcome.status;
  entry.outcome = outcome.error?.errorName ?? 'success';
  entry.errorMessage = outcome.error?.message;
  entry.ms = Math.round(outcome.seconds * 100000) / 100;
  ctx.summary = entry;
  return entry;
}

export const countRequest =
  (metrics: Metrics): ResponseListener =>
  ({ keyStore, route, outcome }) => {
    const errorName = outcome.error?.errorName;
    metrics.observeRequest(keyStore.name, route.operation, errorName, errorName ? RETRYABLE_ERRORS.has(errorName) : false, outcome.seconds);
  };

export const logRequest =
  (logger: Logger): ResponseListener =>
  (ctx) =>
    logger.info(requestSummary(ctx), 'xks request');

export const auditRequest =
  (audit: AuditLog, logger: Logger): ResponseListener =>
  (ctx) => {
    try {
      audit.append({ event: 'key-operation', ...requestSummary(ctx) });
    } catch (e) {
      logger.error({ err: (e as Error).message }, 'audit log write failed');
    }
  };
