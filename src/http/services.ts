import type { AuditLog } from '../audit/log';
import type { KeyStoreRuntime, RuntimeConfig } from '../config/load';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import type { Readiness } from '../ops';
import type { OperationServices } from '../xks/operations';
import type { OverloadGuard } from './overload';
import type { RateLimiter } from './quota';

/** What the XKS request pipeline needs from the process. */
export interface HandlerServices extends OperationServices {
  logger: Logger;
  metrics: Metrics;
  /** The configuration in force now; reloads swap it between requests. */
  runtime(): RuntimeConfig;
  /** Processes sharing the key stores' quotas. */
  workers: number;
  /** The same answer as the ops port's /readyz; GET /healthz on the XKS port reports its `ready`. */
  readiness(): Readiness;
  /** One hash-chained line per processed request. */
  audit?: AuditLog;
  /** True once shutdown began: answers then close their connection so that no client reuses it. */
  draining(): boolean;
  /** Event-loop overload and shed counting; without it nothing is shed for event-loop delay. */
  overload?: OverloadGuard;
}

export interface PipelineServices extends HandlerServices {
  /** This process's share of the key store's quota; undefined when it has none. */
  quotaFor(keyStore: KeyStoreRuntime): RateLimiter | undefined;
}
