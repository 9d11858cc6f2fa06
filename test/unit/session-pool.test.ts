import { XksError } from '../../src/errors';
import { EngineError } from '../../src/engine/errors';
import { SessionPool } from '../../src/engine/session-pool';

/** Lets already-settled promise callbacks run. */
const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Records how a promise settled, without an unhandled rejection. */
function track<T>(p: Promise<T>): { value?: T; error?: unknown; settled: boolean } {
  const t: { value?: T; error?: unknown; settled: boolean } = { settled: false };
  p.then(
    (v) => Object.assign(t, { value: v, settled: true }),
    (e: unknown) => Object.assign(t, { error: e, settled: true }),
  );
  return t;
}

/** A cancel hook the test fires by hand, as the request deadline would. */
function canceller(): { hook: (onCancel: (e: Error) => void) => void; fire: (e: Error) => void } {
  let cb: ((e: Error) => void) | undefined;
  return { hook: (c) => (cb = c), fire: (e) => cb?.(e) };
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

  it('does not call the cancel hook when a session is idle', async () => {
    const pool = new SessionPool(['s'], 1);
    const hook = jest.fn();
    expect(await pool.acquire(hook)).toBe('s');
    expect(hook).not.toHaveBeenCalled();
  });

  it('release(null) drops a broken session: the pool shrinks and waiters keep waiting', async () => {
    const pool = new SessionPool(['a', 'b'], 2);
    const a = await pool.acquire();
    await pool.acquire();
    const w = track(pool.acquire());
    pool.release(null);
    await flush();
    expect(w.settled).toBe(false);
    expect(pool.stats()).toEqual({ size: 1, inUse: 1, idle: 0, waiting: 1 });
    pool.release(a === 'a' ? 'b' : 'a');
    await flush();
    expect(w.settled).toBe(true);
  });

  it('release with a replacement session hands the replacement on', async () => {
    const pool = new SessionPool(['old'], 1);
    await pool.acquire();
    pool.release('new');
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
