import type { KeyStoreRuntime } from '../config/load';

/**
 * Token bucket: `rate` tokens per second, holding at most one second's worth (and at least one token,
 * so that a rate below one a second still admits a request now and then).
 */
export class RateLimiter {
  private capacity: number;
  private tokens: number;

  constructor(
    private rate: number,
    private last = Date.now(),
  ) {
    this.capacity = Math.max(1, rate);
    this.tokens = this.capacity;
  }

  /** Takes up to `want` whole tokens; returns how many it took. */
  take(want: number, now = Date.now()): number {
    this.refill(now);
    const n = Math.min(want, Math.floor(this.tokens));
    this.tokens -= n;
    return n;
  }

  tryTake(now = Date.now()): boolean {
    return this.take(1, now) === 1;
  }

  /** Tokens handed back unused, up to the capacity. */
  give(n: number): void {
    this.tokens = Math.min(this.capacity, this.tokens + n);
  }

  /** What accrued until now accrued at the old rate; from now on the new one applies, with its capacity. */
  setRate(rate: number, now = Date.now()): void {
    if (rate === this.rate) return;
    this.refill(now);
    this.rate = rate;
    this.capacity = Math.max(1, rate);
    this.tokens = Math.min(this.tokens, this.capacity);
  }

  private refill(now: number): void {
    // Date.now() is wall-clock time: a step back (NTP) must not take tokens away.
    const elapsed = Math.max(0, now - this.last);
    this.tokens = Math.min(this.capacity, this.tokens + (elapsed / 1000) * this.rate);
    this.last = now;
  }
}

/** The key stores' request quotas (`requestsPerSecond`), as one process applies them. */
export interface Quotas {
  /**
   * Takes one request from the key store's quota: true when it is within the quota, false when not.
   * A cluster worker whose share of the quota ran out answers once the primary granted more (a promise).
   */
  take(keyStore: KeyStoreRuntime): boolean | Promise<boolean>;
}

/**
 * The quota of every key store, kept by key store name: a reload builds new key store objects, and their
 * budget carries over (a changed rate applies from the reload on). A process serving alone takes from
 * it request by request (LocalQuotas); a cluster's primary holds it for all its workers, which lease
 * tokens from it in batches (src/http/quota-lease.ts).
 */
export class QuotaLedger {
  private readonly buckets = new Map<string, RateLimiter>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Takes up to `want` tokens from the key store's bucket, filled at `rate` per second; returns how many. */
  take(keyStore: string, rate: number, want: number): number {
    const now = this.now();
    return this.bucket(keyStore, rate, now).take(want, now);
  }

  /** Tokens taken earlier and not used. */
  give(keyStore: string, rate: number, n: number): void {
    this.bucket(keyStore, rate, this.now()).give(n);
  }

  private bucket(keyStore: string, rate: number, now: number): RateLimiter {
    let b = this.buckets.get(keyStore);
    if (!b) this.buckets.set(keyStore, (b = new RateLimiter(rate, now)));
    else b.setRate(rate, now);
    return b;
  }
}

/** The quotas of a process that serves alone. */
export class LocalQuotas implements Quotas {
  private readonly ledger: QuotaLedger;

  constructor(now?: () => number) {
    this.ledger = new QuotaLedger(now);
  }

  take(keyStore: KeyStoreRuntime): boolean {
    return keyStore.requestsPerSecond <= 0 || this.ledger.take(keyStore.name, keyStore.requestsPerSecond, 1) === 1;
  }
}
