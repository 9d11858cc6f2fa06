import { XksError } from '../../src/errors';
import { EngineError } from '../../src/engine/errors';
import { SessionPool, WaitBudget } from '../../src/engine/session-pool';
import { track } from '../support/promises';

/** Lets already-settled promise callbacks run. */
const flush = (): Promise<void> => new Promise((r) => setImmediate(r));


/**
 * A wait budget the test expires by hand, as the request deadline would. Its remaining time is
 * unbounded until fired, so that only the cancellation is under test.
 */
function canceller(): { hook: WaitBudget; fire: (e: Error) => void } {
  let cb: ((e: Error) => void) | undefined;
  let left = Infinity;
  return {
    hook: { remaining: () => left, onExpire: (c) => ((cb = c), () => (cb = undefined)) },
    fire: (e) => {
      left = 0;
      cb?.(e);
    },
  };
}

describe('SessionPool', () => {
  it('hands out idle sessions at once and counts them', async () => {
    const pool = new SessionPool(['a', 'b'], 4);
    expect(pool.stats()).toEqual({ size: 2, inUse: 0, idle: 2, waiting: 0 });
    const got = [await pool.acquire(), await pool.acquire()];
    expect(got.sort()).toEqual(['a', 'b']);
    expect(pool.stats()).toEqual({ size: 2, inUse: 2, idle: 0, waiting: 0 });
    pool.release('a');
    expect(pool.stats()).toEqual({ size: 2, inUse: 1, idle: 1, waiting: 0 });
    expect(await pool.acquire()).toBe('a');
  });

  it('takeIdle hands out an idle session without a promise, and nothing when none may be had', () => {
    const pool = new SessionPool(['a'], 4);
    const spent: WaitBudget = { remaining: () => 0, onExpire: () => () => undefined };
    expect(pool.takeIdle(spent)).toBeUndefined();
    expect(pool.takeIdle()).toBe('a');
    expect(pool.stats()).toEqual({ size: 1, inUse: 1, idle: 0, waiting: 0 });
    expect(pool.takeIdle()).toBeUndefined();
    pool.release('a');
    expect(pool.stats()).toEqual({ size: 1, inUse: 0, idle: 1, waiting: 0 });
    pool.drain(new Error('closing'));
    expect(pool.takeIdle()).toBeUndefined();
  });

  it('serves waiters in arrival order', async () => {
    const pool = new SessionPool(['s'], 10);
    const first = await pool.acquire();
    const order: string[] = [];
    const waiters = ['w1', 'w2', 'w3'].map((name) => pool.acquire().then((s) => (order.push(name), s)));
    expect(pool.stats().waiting).toBe(3);
    pool.release(first);
    await flush();
    expect(order).toEqual(['w1']);
    pool.release('s');
    await flush();
    pool.release('s');
    await Promise.all(waiters);
    expect(order).toEqual(['w1', 'w2', 'w3']);
  });

  it('hands a released session straight to a waiter, keeping it in use', async () => {
    const pool = new SessionPool(['s'], 1);
    await pool.acquire();
    const w = track(pool.acquire());
    pool.release('s');
    await flush();
    expect(w).toMatchObject({ settled: true, value: 's' });
    expect(pool.stats()).toEqual({ size: 1, inUse: 1, idle: 0, waiting: 0 });
  });

  it('refuses a caller beyond maxWaiting as busy (ThrottlingException to KMS), without queueing it', async () => {
    const pool = new SessionPool(['s'], 2);
    await pool.acquire();
    const a = track(pool.acquire());
    const b = track(pool.acquire());
    const c = track(pool.acquire());
    await flush();
    expect(c.error).toBeInstanceOf(EngineError);
    expect(c.error).toMatchObject({ kind: 'busy', message: 'too many requests waiting for the HSM' });
    expect(a.settled || b.settled).toBe(false);
    expect(pool.stats().waiting).toBe(2);
  });

  it('with maxWaiting 0 never queues', async () => {
    const pool = new SessionPool(['s'], 0);
    await pool.acquire();
    await expect(pool.acquire()).rejects.toMatchObject({ kind: 'busy' });
    expect(pool.stats().waiting).toBe(0);
  });

  it('removes a cancelled waiter: it rejects with the cancel error and frees its place in the queue', async () => {
    const pool = new SessionPool(['s'], 1);
    await pool.acquire();
    const cancel = canceller();
    const w = track(pool.acquire(cancel.hook));
    const timeout = new XksError('DependencyTimeoutException', 'late');
    cancel.fire(timeout);
    await flush();
    expect(w.error).toBe(timeout);
    expect(pool.stats().waiting).toBe(0);
    // The freed place takes a new waiter, and the next release goes to it, not to the cancelled one.
    const next = track(pool.acquire());
    pool.release('s');
    await flush();
    expect(next.value).toBe('s');
  });

  it('cancelling the middle waiter keeps the others in order', async () => {
    const pool = new SessionPool(['s'], 3);
    await pool.acquire();
    const cancel = canceller();
    const a = track(pool.acquire());
    const b = track(pool.acquire(cancel.hook));
    const c = track(pool.acquire());
    cancel.fire(new Error('gone'));
    pool.release('s');
    await flush();
    expect([a.value, b.settled, c.settled]).toEqual(['s', true, false]);
    pool.release('s');
    await flush();
    expect(c.value).toBe('s');
    expect((b.error as Error).message).toBe('gone');
  });

  it('ignores a cancel after the waiter got its session', async () => {
    const pool = new SessionPool(['s'], 1);
    await pool.acquire();
    const cancel = canceller();
    const w = track(pool.acquire(cancel.hook));
    pool.release('s');
    await flush();
    cancel.fire(new Error('too late'));
    await flush();
    expect(w).toMatchObject({ value: 's' });
    expect(w.error).toBeUndefined();
    expect(pool.stats()).toEqual({ size: 1, inUse: 1, idle: 0, waiting: 0 });
  });

  it('does not watch the budget when a session is idle', async () => {
    const pool = new SessionPool(['s'], 1);
    const onExpire = jest.fn();
    expect(await pool.acquire({ remaining: () => 100, onExpire })).toBe('s');
    expect(onExpire).not.toHaveBeenCalled();
  });

  it('release(session, null) drops a broken session: the pool shrinks and waiters keep waiting', async () => {
    const pool = new SessionPool(['a', 'b'], 2);
    const a = await pool.acquire();
    const b = await pool.acquire();
    const w = track(pool.acquire());
    pool.release(b, null);
    await flush();
    expect(w.settled).toBe(false);
    expect(pool.stats()).toEqual({ size: 1, inUse: 1, idle: 0, waiting: 1 });
    pool.release(a);
    await flush();
    expect(w.value).toBe(a);
  });

  it('release with a replacement session hands the replacement on', async () => {
    const pool = new SessionPool(['old'], 1);
    await pool.acquire();
    pool.release('old', 'new');
    expect(await pool.acquire()).toBe('new');
  });

  it('drain fails every waiter with the given error', async () => {
    const pool = new SessionPool(['a'], 5);
    await pool.acquire();
    const w1 = track(pool.acquire());
    const w2 = track(pool.acquire());
    const closing = new Error('closing');
    expect(pool.drain(closing)).toEqual([]);
    await flush();
    expect(w1.error).toBe(closing);
    expect(w2.error).toBe(closing);
    expect(pool.stats().waiting).toBe(0);
  });

  it('drain returns the idle sessions for closing, and the pool refuses further acquires', async () => {
    const pool = new SessionPool(['a', 'b'], 5);
    const a = await pool.acquire();
    expect(pool.drain(new Error('x'))).toEqual(['a', 'b'].filter((s) => s !== a));
    await expect(pool.acquire()).rejects.toMatchObject({ kind: 'unavailable', message: 'HSM connection is closed' });
    // A session released after the drain is not handed out again.
    pool.release(a);
    expect(pool.stats()).toEqual({ size: 0, inUse: 0, idle: 0, waiting: 0 });
  });
});

/** A budget with a hand-set remaining time that never fires by itself (a late timer). */
function budget(ms: number): WaitBudget & { left: number; watching: boolean } {
  const b = {
    left: ms,
    watching: false,
    remaining: () => b.left,
    onExpire: () => {
      b.watching = true;
      return () => (b.watching = false);
    },
  };
  return b;
}

describe('SessionPool admission by expected wait', () => {
  let now = 0;
  const clock = { now: () => now };
  beforeEach(() => (now = 0));

  it('learns the hold time as a moving average of real holds, plus their deviation', async () => {
    const pool = new SessionPool(['s'], { maxWaiting: 8, initialHoldMs: 10, ...clock });
    expect(pool.expectedHoldMs()).toBe(10);
    await pool.acquire();
    now = 20;
    pool.release('s');
    // Mean 10 + 0.1 * (20 - 10) = 11, deviation 0.1 * 10 = 1; planned with 2 deviations: 13.
    expect(pool.expectedHoldMs()).toBeCloseTo(13);
    for (let i = 0; i < 100; i++) {
      await pool.acquire();
      now += 2;
      pool.release('s');
    }
    expect(pool.expectedHoldMs()).toBeCloseTo(2, 1);
  });

  it('queues a caller only while (ahead + 1) x hold / sessions + hold fits its remaining budget', async () => {
    const pool = new SessionPool(['a', 'b'], { maxWaiting: 100, initialHoldMs: 10, ...clock });
    await pool.acquire();
    await pool.acquire();
    // 2 sessions, 10 ms holds: waiter n (0-based) expects (n + 1) * 5 + 10 ms.
    const admitted = [15, 20, 25].map((ms) => track(pool.acquire(budget(ms))));
    const refused = track(pool.acquire(budget(29.9)));
    await flush();
    expect(admitted.every((t) => !t.settled)).toBe(true);
    expect(refused.error).toBeInstanceOf(EngineError);
    expect(refused.error).toMatchObject({ kind: 'busy', message: 'the HSM cannot serve this request within its deadline' });
    expect(pool.stats().waiting).toBe(3);
    // A larger budget still gets in behind them: (3 + 1) * 5 + 10 = 30.
    expect(track(pool.acquire(budget(30))).settled).toBe(false);
    expect(pool.stats().waiting).toBe(4);
  });

  it('a caller without a budget is bounded by maxWaiting only; maxWaiting caps budgeted callers too', async () => {
    const pool = new SessionPool(['s'], { maxWaiting: 2, initialHoldMs: 1000, ...clock });
    await pool.acquire();
    track(pool.acquire());
    track(pool.acquire(budget(1e9)));
    await expect(pool.acquire(budget(1e9))).rejects.toMatchObject({ kind: 'busy', message: 'too many requests waiting for the HSM' });
  });

  it('a slowed-down HSM tightens admission as its slow calls come back', async () => {
    const pool = new SessionPool(['s'], { maxWaiting: 100, initialHoldMs: 1, ...clock });
    await pool.acquire();
    // 1 ms holds: a 40 ms budget fits many waiters.
    const early = [1, 2, 3, 4, 5].map(() => track(pool.acquire(budget(40))));
    expect(early.every((t) => !t.settled)).toBe(true);
    // Each call now takes 50 ms; every return teaches the estimate.
    for (let i = 0; i < 5; i++) {
      now += 50;
      pool.release('s');
      await flush();
    }
    expect(pool.expectedHoldMs()).toBeGreaterThan(40);
    expect(track(pool.acquire(budget(40))).settled).toBe(false); // the first round is always admitted
    await expect(pool.acquire(budget(40))).rejects.toMatchObject({ kind: 'busy' });
  });

  it('always admits one round of waiters (as many as sessions), whatever the estimate', async () => {
    const pool = new SessionPool(['a', 'b'], { maxWaiting: 100, initialHoldMs: 500, ...clock });
    await pool.acquire();
    await pool.acquire();
    const firstRound = [track(pool.acquire(budget(10))), track(pool.acquire(budget(10)))];
    await expect(pool.acquire(budget(10))).rejects.toMatchObject({ kind: 'busy' });
    expect(firstRound.every((t) => !t.settled)).toBe(true);
  });

  it('refuses a caller whose budget is already spent, even with an idle session', async () => {
    const pool = new SessionPool(['s'], { maxWaiting: 8, ...clock });
    await expect(pool.acquire(budget(0))).rejects.toMatchObject({ kind: 'busy' });
    expect(pool.stats()).toMatchObject({ inUse: 0, idle: 1 });
  });

  it('never hands a session to a waiter whose budget ran out while it waited (its timer not fired yet)', async () => {
    const pool = new SessionPool(['s'], { maxWaiting: 8, initialHoldMs: 1, ...clock });
    await pool.acquire();
    const lateBudget = budget(100);
    const late = track(pool.acquire(lateBudget));
    const nextBudget = budget(100);
    const next = track(pool.acquire(nextBudget));
    expect(lateBudget.watching).toBe(true);
    lateBudget.left = -1;
    pool.release('s');
    await flush();
    expect(late.error).toMatchObject({ kind: 'busy', message: "the request's deadline passed before an HSM session was free" });
    expect(next.value).toBe('s');
    // The served waiter no longer watches its budget (no late cancel of a session it holds).
    expect(nextBudget.watching).toBe(false);
    expect(pool.stats()).toEqual({ size: 1, inUse: 1, idle: 0, waiting: 0 });
  });
});
