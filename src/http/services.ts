import type { AuditLog } from '../audit/log';
import type { RuntimeConfig } from '../config/load';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import type { Readiness } from '../ops';
import type { OperationServices } from '../xks/operations';
import type { OverloadGuard } from './overload';
import type { Quotas } from './quota';

/** What the XKS request pipeline needs from the process. */
export interface HandlerServices extends OperationServices {
  logger: Logger;
  metrics: Metrics;
  /** The configuration in force now; reloads swap it between requests. */
  runtime(): RuntimeConfig;
  /** The key stores' request quotas: this process's own, or a cluster worker's leases from the primary. */
  quotas: Quotas;
  /** The same answer as the ops port's /readyz; GET /healthz on the XKS port reports its `ready`. */
  readiness(): Readiness;
  /** One hash-chained line per processed request. */
  audit?: AuditLog;
  /** True once shutdown began: answers then close their connection so that no client reuses it. */
  draining(): boolean;
  /** Event-loop overload and shed counting; without it nothing is shed for event-loop delay. */
  overload?: OverloadGuard;
  /** Wall clock (ms) of the refusal logs' detail budgets; default Date.now (tests move their own). */
  now?: () => number;
}
