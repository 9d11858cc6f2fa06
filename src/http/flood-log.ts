import { RateLimiter } from './quota';

export interface FloodSummary {
  keyStore: string;
  suppressed: number;
  /** Suppressed refusals by reason, as `reason:count` pairs (the audit trail holds only scalars). */
  reasons: string;
  seconds: number;
}

export interface FloodLogOptions {
  /** Detailed log and audit lines per key store per second (with a burst of as many). */
  perSecond: number;
  /** How often a summary of what was suppressed is written, while refusals keep being suppressed. */
  summaryEveryMs: number;
  summary(s: FloodSummary): void;
  now?: () => number;
}

interface StoreState<K> {
  detailed: RateLimiter;
  suppressed: Map<K, number>;
  since: number;
}

/**
 * Bounds what a flood of alike refusals (failed authentications, shed requests) writes: a few detailed
 * lines per key store per second, then one summary with counts by reason every `summaryEveryMs`. The
 * metrics count every refusal regardless; this only decides which ones get a line. The summary timer
 * runs only while something is waiting to be summarised, so an idle proxy has no timer.
 */
export class FloodLog<K extends string> {
  private readonly stores = new Map<string, StoreState<K>>();
  private timer: NodeJS.Timeout | undefined;
  private readonly now: () => number;

  constructor(private readonly opts: FloodLogOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** True when this refusal may be written in detail; otherwise it is counted for the next summary. */
  admit(keyStore: string, kind: K): boolean {
    const now = this.now();
    let s = this.stores.get(keyStore);
    if (!s) this.stores.set(keyStore, (s = { detailed: new RateLimiter(this.opts.perSecond, now), suppressed: new Map(), since: now }));
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
