import { RateLimiter } from '../../src/http/quota';

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

  // The handler builds RateLimiter(requestsPerSecond / workers): a quota of 1/s on 2 workers is 0.5 here, and a
  // bucket that holds at most 0.5 tokens never admits anything.
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
