import type { KeyStoreRuntime } from '../config/load';
import type { QuotaLedger, Quotas } from './quota';

/**
 * A key store's quota across cluster workers. Workers accept their own connections (src/main.ts), so
 * KMS's few keep-alive connections can all land on one worker: a quota split by the worker count would
 * throttle that worker at a fraction of the rate. Instead the primary holds each key store's whole
 * bucket (QuotaLedger), and each worker leases tokens from it in batches of LEASE_MS at the full rate,
 * asking for the next batch while half of the current one is left: a request takes a token locally,
 * with no message on its path, and only one that finds its worker's share empty waits for the
 * primary's answer (a worker's first request, or one after a long stall). When the primary grants less
 * than asked, the key store is over its quota: the worker refuses at once, without asking again, until
 * the missing tokens would have accrued. A share unused for IDLE_MS goes back to the primary, and a
 * worker whose configuration changed a key store's rate gives back what it leased at the old one.
 *
 * A burst can exceed the bucket by what the workers hold (at most about 1.5 batches each), and a
 * worker's crash loses what it held: both a few percent of a second's quota.
 */

/** Worker to primary: gives back `refund` unused tokens and asks for `want` more, at the key store's `rate`. */
export interface LeaseRequest {
  xks: 'quota-lease';
  keyStore: string;
  rate: number;
  want: number;
  refund: number;
}

/** Primary to worker: how many tokens of the key store's last lease request it granted. */
export interface LeaseGrant {
  xks: 'quota-grant';
  keyStore: string;
  granted: number;
}

/** How much of the full rate one lease covers (90 tokens at KMS's 1800 req/s): at most 20 leases a second per worker. */
const LEASE_MS = 50;
/** A worker's share unused this long goes back to the primary. */
const IDLE_MS = 1000;
/** A lease not answered within this (a primary gone) counts as nothing granted, so that no request waits for ever. */
const LEASE_TIMEOUT_MS = 1000;

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;

export function isLeaseRequest(m: unknown): m is LeaseRequest {
  if (typeof m !== 'object' || m === null) return false;
  const r: Partial<Record<keyof LeaseRequest, unknown>> = m;
  return r.xks === 'quota-lease' && typeof r.keyStore === 'string' && isCount(r.rate) && isCount(r.want) && isCount(r.refund);
}

export function isLeaseGrant(m: unknown): m is LeaseGrant {
  if (typeof m !== 'object' || m === null) return false;
  const g: Partial<Record<keyof LeaseGrant, unknown>> = m;
  return g.xks === 'quota-grant' && typeof g.keyStore === 'string' && isCount(g.granted);
}

/** The primary's side: applies a worker's request to the ledger; a grant to send back when it asked for tokens. */
export function answerLease(ledger: QuotaLedger, r: LeaseRequest): LeaseGrant | undefined {
  if (r.refund > 0) ledger.give(r.keyStore, r.rate, r.refund);
  if (r.want <= 0) return undefined;
  return { xks: 'quota-grant', keyStore: r.keyStore, granted: ledger.take(r.keyStore, r.rate, r.want) };
}

/** How a worker reaches the primary: process.send in a cluster worker. False: not sent (the channel is closed). */
export type LeaseSend = (request: LeaseRequest) => boolean;

interface Share {
  rate: number;
  /** Leased and not yet used. */
  tokens: number;
  /** What the lease on its way asked for (0: none on its way). */
  asked: number;
  timer: NodeJS.Timeout | undefined;
  /** Until then the key store is over its quota: no lease is asked for, and an empty share refuses at once. */
  dryUntil: number;
  /** Requests that found the share empty, answered when the lease on its way is. */
  waiters: ((admitted: boolean) => void)[];
  lastUsed: number;
}

const batchOf = (rate: number): number => Math.max(1, Math.ceil((rate * LEASE_MS) / 1000));

/** A cluster worker's quotas: shares leased from the primary's ledger (see the top of this file). */
export class LeasedQuotas implements Quotas {
  private readonly shares = new Map<string, Share>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly send: LeaseSend,
    private readonly now: () => number = Date.now,
  ) {}

  take(keyStore: KeyStoreRuntime): boolean | Promise<boolean> {
    const rate = keyStore.requestsPerSecond;
    if (rate <= 0) return true;
    const now = this.now();
    const name = keyStore.name;
    let s = this.shares.get(name);
    if (!s) this.shares.set(name, (s = { rate, tokens: 0, asked: 0, timer: undefined, dryUntil: 0, waiters: [], lastUsed: now }));
    else if (s.rate !== rate) this.rerate(name, s, rate);
    s.lastUsed = now;
    const batch = batchOf(rate);
    if (s.tokens >= 1) {
      s.tokens -= 1;
      if (s.tokens <= batch / 2 && s.asked === 0 && now >= s.dryUntil) this.lease(name, s, batch);
      return true;
    }
    if (s.asked === 0) {
      if (now < s.dryUntil) return false;
      this.lease(name, s, batch);
      // Answered already: the channel is closed (nothing granted).
      if (s.asked === 0) return false;
    }
    const waiters = s.waiters;
    return new Promise((resolve) => waiters.push(resolve));
  }

  /** The primary's answer to this worker's last lease request for the key store. */
  granted(grant: LeaseGrant): void {
    const s = this.shares.get(grant.keyStore);
    if (!s || s.asked === 0) return;
    this.settle(grant.keyStore, s, grant.granted);
  }

  /** Gives back every share unused for IDLE_MS. Run by a timer while some share holds tokens. */
  returnIdle(): void {
    const idleSince = this.now() - IDLE_MS;
    let holding = false;
    for (const [name, s] of this.shares) {
      if (s.tokens >= 1 && s.lastUsed <= idleSince && s.asked === 0) this.refund(name, s);
      holding ||= s.tokens >= 1;
    }
    if (!holding) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  private settle(name: string, s: Share, granted: number): void {
    const asked = s.asked;
    clearTimeout(s.timer);
    s.timer = undefined;
    s.asked = 0;
    s.tokens += granted;
    if (granted < asked) s.dryUntil = this.now() + ((asked - granted) * 1000) / s.rate;
    if (s.tokens >= 1) this.sweeper ??= setInterval(() => this.returnIdle(), IDLE_MS).unref();
    const waiters = s.waiters;
    s.waiters = [];
    const unserved: ((admitted: boolean) => void)[] = [];
    for (const waiter of waiters) {
      if (s.tokens < 1) unserved.push(waiter);
      else {
        s.tokens -= 1;
        waiter(true);
      }
    }
    if (unserved.length > 0 && granted >= asked) {
      // A burst larger than the lease, while the key store still had tokens: ask for the rest.
      s.waiters = unserved;
      this.lease(name, s, unserved.length + batchOf(s.rate));
      return;
    }
    for (const waiter of unserved) waiter(false);
  }

  private lease(name: string, s: Share, want: number): void {
    s.asked = want;
    if (!this.send({ xks: 'quota-lease', keyStore: name, rate: s.rate, want, refund: 0 })) {
      this.settle(name, s, 0);
      return;
    }
    s.timer = setTimeout(() => this.settle(name, s, 0), LEASE_TIMEOUT_MS).unref();
  }

  /** A reload changed the rate: what was leased at the old one goes back, so the new one applies from now. */
  private rerate(name: string, s: Share, rate: number): void {
    s.rate = rate;
    s.dryUntil = 0;
    this.refund(name, s);
  }

  private refund(name: string, s: Share): void {
    const refund = Math.floor(s.tokens);
    if (refund < 1) return;
    s.tokens -= refund;
    this.send({ xks: 'quota-lease', keyStore: name, rate: s.rate, want: 0, refund });
  }
}
