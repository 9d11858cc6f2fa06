import { XksError } from '../errors';
import type { AuthFailureKind, SigV4Failure } from '../sigv4/verify';
import { RateLimiter } from './quota';

/**
 * The one message every SigV4 refusal carries: the answer must not tell an unauthenticated caller
 * whether an access key id exists, or which check failed. The detail goes to the log only.
 */
export const AUTH_FAILED_MESSAGE = 'SigV4 authentication failed';

/** Client-chosen text (a header name) can appear in a reason; the log keeps a bounded prefix. */
const MAX_DETAIL = 160;

export class AuthenticationFailed extends XksError {
  readonly kind: AuthFailureKind;
  readonly detail: string;

  constructor(failure: SigV4Failure) {
    super('AuthenticationFailedException', AUTH_FAILED_MESSAGE);
    this.kind = failure.kind;
    this.detail = failure.reason.length > MAX_DETAIL ? `${failure.reason.slice(0, MAX_DETAIL)}...` : failure.reason;
  }
}

export interface AuthFailureSummary {
  keyStore: string;
  suppressed: number;
  /** Suppressed failures by reason, as `reason:count` pairs (the audit trail holds only scalars). */
  reasons: string;
  seconds: number;
}

export interface AuthFailureLogOptions {
  /** Detailed log and audit lines per key store per second (with a burst of as many). */
  perSecond: number;
  /** How often a summary of what was suppressed is written, while failures keep being suppressed. */
  summaryEveryMs: number;
  summary(s: AuthFailureSummary): void;
  now?: () => number;
}

interface StoreState {
  detailed: RateLimiter;
  suppressed: Map<AuthFailureKind, number>;
  since: number;
}

/**
 * Bounds what a flood of failed authentications writes: a few detailed lines per key store per
 * second, then one summary with counts by reason every `summaryEveryMs`. The metric counts every
 * failure regardless; this only decides which ones get a line. The summary timer runs only while
 * something is waiting to be summarised, so an idle proxy has no timer.
 */
export class AuthFailureLog {
  private readonly stores = new Map<string, StoreState>();
  private timer: NodeJS.Timeout | undefined;
  private readonly now: () => number;

  constructor(private readonly opts: AuthFailureLogOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** True when this failure may be written in detail; otherwise it is counted for the next summary. */
  admit(keyStore: string, kind: AuthFailureKind): boolean {
    const now = this.now();
    let s = this.stores.get(keyStore);
    if (!s) this.stores.set(keyStore, (s = { detailed: new RateLimiter(this.opts.perSecond), suppressed: new Map(), since: now }));
    if (s.detailed.tryTake(now)) return true;
    if (s.suppressed.size === 0) s.since = now;
    s.suppressed.set(kind, (s.suppressed.get(kind) ?? 0) + 1);
    this.timer ??= setTimeout(() => this.flush(), this.opts.summaryEveryMs).unref();
    return false;
  }

  /** Writes a summary for every key store with suppressed failures, and forgets them. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const now = this.now();
    for (const [keyStore, s] of this.stores) {
      if (s.suppressed.size === 0) continue;
      let suppressed = 0;
      const reasons: string[] = [];
      for (const [kind, n] of s.suppressed) {
        suppressed += n;
        reasons.push(`${kind}:${n}`);
      }
      s.suppressed.clear();
      this.opts.summary({ keyStore, suppressed, reasons: reasons.join(','), seconds: Math.round((now - s.since) / 100) / 10 });
    }
  }
}
