/**
 * Time for code under test that reads the clock itself (setTimeout, Date.now, performance.now): jest's
 * fake timers (@sinonjs/fake-timers). The test moves time with jest.advanceTimersByTime[Async].
 *
 * process.nextTick, setImmediate and queueMicrotask stay real, so that a test with real I/O in it (a
 * PKCS#11 module, a socket) still sees its callbacks run; only what "time passes" means is faked.
 * Restore with jest.useRealTimers() (afterEach).
 */
export function useFakeTime(now = Date.now()): void {
  jest.useFakeTimers({ now, doNotFake: ['nextTick', 'setImmediate', 'clearImmediate', 'queueMicrotask'] });
}

/** A wall clock the test moves by hand, for code that takes one (`now: () => number`). */
export class ManualClock {
  constructor(private ms = Date.UTC(2026, 0, 15, 12)) {}
  readonly now = (): number => this.ms;
  advance(ms: number): void {
    this.ms += ms;
  }
}
