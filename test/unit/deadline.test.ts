import { Deadline } from '../../src/deadline';
import { XksError } from '../../src/errors';
import { track } from '../support/promises';

beforeEach(() => jest.useFakeTimers());
afterEach(() => jest.useRealTimers());


/** Lets settled promise callbacks run without moving the fake clock. */
const flush = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await Promise.resolve();
};

describe('Deadline', () => {
  it('expires after exactly its budget, with DependencyTimeoutException naming it', () => {
    const d = new Deadline(200);
    const seen: XksError[] = [];
    d.onExpire((e) => seen.push(e));
    jest.advanceTimersByTime(199);
    expect(d.expired).toBe(false);
    expect(seen).toHaveLength(0);
    jest.advanceTimersByTime(1);
    expect(d.expired).toBe(true);
    expect(seen).toHaveLength(1);
    expect(seen[0]).toBeInstanceOf(XksError);
    expect(seen[0]).toMatchObject({ errorName: 'DependencyTimeoutException', status: 503, message: 'the HSM did not answer within 200 ms' });
  });

  it('calls every listener once, with the same error', () => {
    const d = new Deadline(10);
    const a = jest.fn<void, [XksError]>();
    const b = jest.fn<void, [XksError]>();
    d.onExpire(a);
    d.onExpire(b);
    jest.advanceTimersByTime(1000);
    expect(a).toHaveBeenCalledTimes(1);
    expect(b).toHaveBeenCalledTimes(1);
    expect(a.mock.calls[0]?.[0]).toBe(b.mock.calls[0]?.[0]);
  });

  it('calls a listener added after expiry at once, synchronously, with the same error', () => {
    const d = new Deadline(10);
    const early = jest.fn<void, [XksError]>();
    d.onExpire(early);
    jest.advanceTimersByTime(10);
    const late = jest.fn<void, [XksError]>();
    const cancel = d.onExpire(late);
    expect(late).toHaveBeenCalledTimes(1);
    expect(late.mock.calls[0]?.[0]).toBe(early.mock.calls[0]?.[0]);
    expect(() => cancel()).not.toThrow();
  });

  it('does not call a listener whose canceller ran, and keeps the others', () => {
    const d = new Deadline(10);
    const gone = jest.fn();
    const kept = jest.fn();
    const cancel = d.onExpire(gone);
    d.onExpire(kept);
    cancel();
    cancel();
    jest.advanceTimersByTime(10);
    expect(gone).not.toHaveBeenCalled();
    expect(kept).toHaveBeenCalledTimes(1);
  });

  it('clear stops the timer: it never expires and no listener runs', () => {
    const d = new Deadline(10);
    const fn = jest.fn();
    d.onExpire(fn);
    d.clear();
    expect(jest.getTimerCount()).toBe(0);
    jest.advanceTimersByTime(1000);
    expect(d.expired).toBe(false);
    expect(fn).not.toHaveBeenCalled();
  });

  describe('race', () => {
    it('resolves with the work when it finishes first, and leaves no listener behind', async () => {
      const d = new Deadline(100);
      const r = track(d.race(Promise.resolve('done')));
      await flush();
      expect(r).toMatchObject({ settled: true, value: 'done' });
      jest.advanceTimersByTime(100);
      await flush();
      expect(r.error).toBeUndefined();
    });

    it('passes the work error through unchanged', async () => {
      const d = new Deadline(100);
      const boom = new XksError('InvalidCiphertextException', 'bad tag');
      const r = track(d.race(Promise.reject(boom)));
      await flush();
      expect(r.error).toBe(boom);
    });

    it('rejects with DependencyTimeoutException when the work is slower, and ignores its late result', async () => {
      const d = new Deadline(50);
      let finish!: (v: string) => void;
      const r = track(d.race(new Promise<string>((res) => (finish = res))));
      jest.advanceTimersByTime(49);
      await flush();
      expect(r.settled).toBe(false);
      jest.advanceTimersByTime(1);
      await flush();
      expect(r.error).toMatchObject({ errorName: 'DependencyTimeoutException', message: 'the HSM did not answer within 50 ms' });
      finish('late');
      await flush();
      expect(r.value).toBeUndefined();
    });

    it('rejects at once when the deadline has already expired', async () => {
      const d = new Deadline(5);
      jest.advanceTimersByTime(5);
      const r = track(d.race(new Promise(() => undefined)));
      await flush();
      expect(r.error).toMatchObject({ errorName: 'DependencyTimeoutException' });
    });

    it('after clear, waits for the work however long it takes', async () => {
      const d = new Deadline(5);
      let finish!: (v: number) => void;
      const r = track(d.race(new Promise<number>((res) => (finish = res))));
      d.clear();
      jest.advanceTimersByTime(1000);
      await flush();
      expect(r.settled).toBe(false);
      finish(7);
      await flush();
      expect(r.value).toBe(7);
    });

    it('serves several races on one deadline (one per HSM call of a request)', async () => {
      const d = new Deadline(30);
      const first = track(d.race(Promise.resolve(1)));
      await flush();
      const second = track(d.race(new Promise(() => undefined)));
      jest.advanceTimersByTime(30);
      await flush();
      expect(first.value).toBe(1);
      expect(second.error).toMatchObject({ errorName: 'DependencyTimeoutException' });
    });
  });

  describe('remaining', () => {
    it('counts down from the backdated start', () => {
      const d = new Deadline(200, performance.now() - 50);
      expect(d.remaining()).toBeCloseTo(150);
      jest.advanceTimersByTime(100);
      expect(d.remaining()).toBeCloseTo(50);
    });

    it('a spent budget found by remaining() expires at once, before its (late) timer fires', () => {
      const d = new Deadline(100);
      const seen: XksError[] = [];
      d.onExpire((e) => seen.push(e));
      // Move the clock without running timers, as a blocked event loop does.
      const base = performance.now();
      jest.spyOn(performance, 'now').mockReturnValue(base + 150);
      expect(d.remaining()).toBeLessThanOrEqual(0);
      expect(d.expired).toBe(true);
      expect(seen).toHaveLength(1);
      jest.restoreAllMocks();
      jest.advanceTimersByTime(200);
      expect(seen).toHaveLength(1); // the timer, when it runs, does not expire it twice
    });
  });
});
