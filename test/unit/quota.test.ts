import { expect } from '@jest/globals';
import { hidden, KeyStoreRuntime } from '../../src/config/load';
import { LocalQuotas, QuotaLedger, RateLimiter } from '../../src/http/quota';
import { answerLease, isLeaseGrant, isLeaseRequest, LeasedQuotas, LeaseRequest } from '../../src/http/quota-lease';

const T0 = 1_800_000_000_000;

// The limiter reads Date.now() when built; pin it so "now" in each call is exact.
beforeEach(() => jest.useFakeTimers({ now: T0 }));
afterEach(() => jest.useRealTimers());

/** How many of n requests at the same instant are admitted. */
const admitted = (q: RateLimiter, n: number, now: number): number => {
  let ok = 0;
  for (let i = 0; i < n; i++) if (q.tryTake(now)) ok++;
  return ok;
};

describe('RateLimiter', () => {
  it('admits a one-second burst at once, then refuses', () => {
    const q = new RateLimiter(10);
    expect(admitted(q, 10, T0)).toBe(10);
    expect(q.tryTake(T0)).toBe(false);
  });

  it('refills at the rate: one token per 1/rate seconds', () => {
    const q = new RateLimiter(10);
    admitted(q, 10, T0);
    expect(q.tryTake(T0 + 99)).toBe(false);
    expect(q.tryTake(T0 + 100)).toBe(true);
    expect(q.tryTake(T0 + 100)).toBe(false);
    expect(admitted(q, 10, T0 + 600)).toBe(5);
  });

  it('never stores more than one second of tokens, however long it was idle', () => {
    const q = new RateLimiter(5);
    expect(admitted(q, 100, T0 + 3_600_000)).toBe(5);
  });

  it('holds the admitted rate to the configured one over a long run', () => {
    const q = new RateLimiter(100);
    let ok = 0;
    // One request every millisecond for 10 s: the burst plus 100/s.
    for (let t = 0; t < 10_000; t++) if (q.tryTake(T0 + t)) ok++;
    expect(ok).toBeGreaterThanOrEqual(100 + 999);
    expect(ok).toBeLessThanOrEqual(100 + 1000);
  });

  it('uses Date.now() when no time is given', () => {
    const q = new RateLimiter(2);
    expect([q.tryTake(), q.tryTake(), q.tryTake()]).toEqual([true, true, false]);
    jest.setSystemTime(T0 + 500);
    expect(q.tryTake()).toBe(true);
  });

  // A bucket that held at most 0.5 tokens would never admit anything.
  it('a rate below 1 still admits one request per 1/rate seconds', () => {
    const q = new RateLimiter(0.5);
    const results = [0, 2_000, 4_000].map((t) => q.tryTake(T0 + t));
    expect(results.filter(Boolean).length).toBeGreaterThanOrEqual(2);
  });

  // Date.now() is wall-clock time: an NTP step back by d seconds must not take d x rate tokens away (with a
  // one-hour step, the key store would answer ThrottlingException for an hour).
  it('a clock that steps back does not drain the bucket', () => {
    const q = new RateLimiter(10);
    expect(q.tryTake(T0)).toBe(true);
    expect(q.tryTake(T0 - 60_000)).toBe(true);
  });
});

/** A key store as the pipeline sees one: a reload builds a new object with the same name. */
const store = (name: string, requestsPerSecond: number): KeyStoreRuntime =>
  hidden({ name, pathPrefix: `/${name}`, regions: new Set<string>(), status: 'ENABLED' as const, requestsPerSecond, keys: new Map() }, 'secrets', new Map<string, Buffer>());

describe('LocalQuotas (one process)', () => {
  it('keeps a key store budget across a reload, which builds a new key store object', () => {
    let now = T0;
    const q = new LocalQuotas(() => now);
    let admitted = 0;
    for (let i = 0; i < 10; i++) if (q.take(store('a', 10))) admitted++;
    expect(admitted).toBe(10);
    // The reloaded configuration: same key store, new object. The spent budget stays spent.
    expect(q.take(store('a', 10))).toBe(false);
    now += 100;
    expect(q.take(store('a', 10))).toBe(true);
  });

  it('applies a changed rate from the reload on, without refilling the bucket', () => {
    let now = T0;
    const q = new LocalQuotas(() => now);
    for (let i = 0; i < 10; i++) q.take(store('a', 10));
    now += 1000;
    // A second at 10/s refilled 10; the new rate does not add to what accrued before it.
    let admitted = 0;
    for (let i = 0; i < 50; i++) if (q.take(store('a', 40))) admitted++;
    expect(admitted).toBe(10);
    now += 500;
    admitted = 0;
    for (let i = 0; i < 50; i++) if (q.take(store('a', 40))) admitted++;
    expect(admitted).toBe(20);
  });

  it('keeps key stores apart, and a key store without a quota always passes', () => {
    const q = new LocalQuotas(() => T0);
    for (let i = 0; i < 5; i++) q.take(store('a', 5));
    expect(q.take(store('a', 5))).toBe(false);
    expect(q.take(store('b', 5))).toBe(true);
    for (let i = 0; i < 1000; i++) expect(q.take(store('c', 0))).toBe(true);
  });
});

describe('RateLimiter.setRate and give', () => {
  it('a lower rate caps what the bucket holds at its new capacity; tokens given back stay under it', () => {
    const b = new RateLimiter(100, T0);
    b.setRate(10, T0);
    expect(b.take(100, T0)).toBe(10);
    b.give(50);
    expect(b.take(100, T0)).toBe(10);
  });
});

/**
 * A cluster in one test: workers lease from a primary's ledger over a channel the test delivers by hand
 * (`deliver`), on a clock the test moves.
 */
class Cluster {
  now = T0;
  readonly ledger = new QuotaLedger(() => this.now);
  private inbox: { worker: LeasedQuotas; request: LeaseRequest }[] = [];
  messages = 0;
  connected = true;

  worker(): LeasedQuotas {
    const worker: LeasedQuotas = new LeasedQuotas(
      (request) => {
        if (!this.connected) return false;
        this.messages++;
        this.inbox.push({ worker, request });
        return true;
      },
      () => this.now,
    );
    return worker;
  }

  /** The primary answers everything sent so far. */
  deliver(): void {
    const inbox = this.inbox;
    this.inbox = [];
    for (const { worker, request } of inbox) {
      const grant = answerLease(this.ledger, request);
      if (grant) worker.granted(grant);
    }
  }

  pending(): LeaseRequest[] {
    return this.inbox.map((m) => m.request);
  }
}

/** Sends `perSecond` requests a second through `worker` for `seconds`, the primary answering within the millisecond. */
async function load(c: Cluster, plan: { worker: LeasedQuotas; perSecond: number }[], ks: KeyStoreRuntime, seconds: number): Promise<{ admitted: number; refused: number }> {
  const results: (boolean | Promise<boolean>)[] = [];
  const due = plan.map(() => 0);
  for (let ms = 0; ms < seconds * 1000; ms++) {
    plan.forEach((p, i) => {
      due[i] = (due[i] as number) + p.perSecond / 1000;
      for (; due[i] >= 1; due[i] = due[i] - 1) results.push(p.worker.take(ks));
    });
    c.deliver();
    c.now++;
  }
  // Requests still waiting for a share are answered once the primary answers what their worker asked.
  for (let i = 0; i < 10 && c.pending().length > 0; i++) {
    c.deliver();
    await Promise.resolve();
  }
  const settled = await Promise.all(results);
  const admitted = settled.filter(Boolean).length;
  return { admitted, refused: settled.length - admitted };
}

describe('LeasedQuotas (cluster workers leasing from the primary)', () => {
  beforeEach(() => jest.useFakeTimers({ now: T0 }));

  it('one worker with all the traffic at 90% of the quota is never throttled, and asks the primary rarely', async () => {
    const c = new Cluster();
    const busy = c.worker();
    c.worker(); // idle: the other worker, to which none of the connections went
    const r = await load(c, [{ worker: busy, perSecond: 1620 }], store('a', 1800), 10);
    expect(r).toEqual({ admitted: 16200, refused: 0 });
    // Batches of 90: about 18 leases a second, not one message per request.
    expect(c.messages).toBeLessThan(16200 / 50);
  });

  it('the workers together admit the quota, not each of them: 150% across two workers', async () => {
    const c = new Cluster();
    const [a, b] = [c.worker(), c.worker()];
    const r = await load(c, [{ worker: a, perSecond: 1350 }, { worker: b, perSecond: 1350 }], store('a', 1800), 10);
    // The bucket's second of burst plus 10 s at the rate, and what the workers hold (1.5 batches each) at most.
    expect(r.admitted).toBeLessThanOrEqual(1800 + 18_000 + 2 * 135);
    expect(r.admitted).toBeGreaterThanOrEqual(1800 + 18_000 - 2 * 135);
    expect(r.refused).toBe(27_000 - r.admitted);
  });

  it('over the quota, an empty share refuses at once, without a message, until the missing tokens accrue', async () => {
    const c = new Cluster();
    const w = c.worker();
    const ks = store('a', 20);
    await load(c, [{ worker: w, perSecond: 1000 }], ks, 1);
    const before = c.messages;
    expect(w.take(ks)).toBe(false);
    expect(w.take(ks)).toBe(false);
    expect(c.messages).toBe(before);
  });

  it('a worker first asked for a key store waits for its share instead of refusing', async () => {
    const c = new Cluster();
    const w = c.worker();
    const ks = store('a', 100);
    const first = w.take(ks);
    const second = w.take(ks);
    expect(first).toBeInstanceOf(Promise);
    expect(c.pending()).toEqual([{ xks: 'quota-lease', keyStore: 'a', rate: 100, want: 5, refund: 0 }]);
    c.deliver();
    await expect(Promise.all([first, second])).resolves.toEqual([true, true]);
    expect(w.take(ks)).toBe(true);
  });

  it('a burst larger than one lease, while the key store has tokens, is admitted in full', async () => {
    const c = new Cluster();
    const w = c.worker();
    const ks = store('a', 100);
    const burst = Array.from({ length: 60 }, () => w.take(ks));
    c.deliver();
    await Promise.resolve();
    c.deliver();
    expect(await Promise.all(burst)).toEqual(burst.map(() => true));
  });

  it('a reload keeps the budget: the primary keeps it by name, and the worker keeps its share', async () => {
    const c = new Cluster();
    const w = c.worker();
    await load(c, [{ worker: w, perSecond: 400 }], store('a', 100), 2);
    // Spent: a reloaded key store (a new object, same name and rate) finds it spent.
    const after = await load(c, [{ worker: w, perSecond: 400 }], store('a', 100), 1);
    expect(after.admitted).toBeLessThanOrEqual(100 + 10);
  });

  it('a changed rate: the worker gives back what it leased at the old one, and the new one applies from then on', async () => {
    const c = new Cluster();
    const w = c.worker();
    expect(await load(c, [{ worker: w, perSecond: 50 }], store('a', 100), 1)).toEqual({ admitted: 50, refused: 0 });
    const r = await load(c, [{ worker: w, perSecond: 1000 }], store('a', 10), 5);
    // At most the new capacity (10) plus 5 s at 10/s, and a share of one.
    expect(r.admitted).toBeLessThanOrEqual(10 + 50 + 1);
    expect(r.admitted).toBeGreaterThanOrEqual(50);
  });

  it('a share unused for a second goes back to the primary', async () => {
    const c = new Cluster();
    const [a, b] = [c.worker(), c.worker()];
    const ks = store('a', 100);
    await load(c, [{ worker: a, perSecond: 10 }], ks, 1);
    jest.advanceTimersByTime(1000);
    c.now += 1000;
    jest.advanceTimersByTime(1000);
    expect(c.pending()).toEqual([expect.objectContaining({ keyStore: 'a', want: 0, refund: expect.any(Number) })]);
    c.deliver();
    // Everything is with the primary again: b can take the whole bucket.
    const r = await load(c, [{ worker: b, perSecond: 100_000 }], ks, 0.001);
    expect(r.admitted).toBe(100);
  });

  it('with the channel to the primary closed, a request is refused, never left waiting', async () => {
    const c = new Cluster();
    c.connected = false;
    expect(c.worker().take(store('a', 100))).toBe(false);
  });

  it('a lease the primary never answers counts as nothing granted after a second', async () => {
    const c = new Cluster();
    const w = c.worker();
    const waiting = w.take(store('a', 100));
    jest.advanceTimersByTime(1000);
    await expect(waiting).resolves.toBe(false);
  });

  it('only well-formed messages are taken for lease requests and grants', () => {
    expect(isLeaseRequest({ xks: 'quota-lease', keyStore: 'a', rate: 1, want: 1, refund: 0 })).toBe(true);
    expect(isLeaseRequest({ xks: 'quota-lease', keyStore: 'a', rate: 1, want: -1, refund: 0 })).toBe(false);
    expect(isLeaseRequest({ xks: 'ready', ready: true })).toBe(false);
    expect(isLeaseRequest(null)).toBe(false);
    expect(isLeaseGrant({ xks: 'quota-grant', keyStore: 'a', granted: 3 })).toBe(true);
    expect(isLeaseGrant({ xks: 'quota-grant', keyStore: 'a', granted: Number.NaN })).toBe(false);
  });
});
