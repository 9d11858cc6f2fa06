import { XksError } from './errors';

/**
 * A per-request time budget. KMS gives up after 250 ms; answering DependencyTimeoutException before
 * that tells it (and the operator's metrics) the HSM was slow, instead of a silent socket timeout.
 * (A plain timer and callback list: AbortController/EventTarget cost more than this on the hot path.)
 */
export class Deadline {
  private readonly timer: NodeJS.Timeout;
  private listeners: ((error: XksError) => void)[] = [];
  private error: XksError | undefined;

  /** `startedAt` (performance.now()) backdates the start, so that a request's budget counts from its arrival. */
  constructor(
    private readonly ms: number,
    private readonly startedAt = performance.now(),
  ) {
    // Whole milliseconds: node keeps one timer list per duration, and a fractional one made a list (and a
    // priority-queue entry) per request.
    this.timer = setTimeout(() => this.expire(), Math.max(0, Math.ceil(ms - (performance.now() - startedAt))));
  }

  get expired(): boolean {
    return this.error !== undefined;
  }

  /**
   * Milliseconds left, from the clock rather than the timer: on a busy event loop the timer fires late,
   * and admission decisions made meanwhile must not believe a spent budget is still there. A budget found
   * spent here expires at once (its listeners run), so that nobody waits for the late timer.
   */
  remaining(): number {
    const left = this.ms - (performance.now() - this.startedAt);
    if (left <= 0 && !this.error) this.expire();
    return left;
  }

  private expire(): void {
    if (this.error) return;
    clearTimeout(this.timer);
    this.error = new XksError('DependencyTimeoutException', `the HSM did not answer within ${this.ms} ms`);
    const listeners = this.listeners;
    this.listeners = [];
    for (const l of listeners) l(this.error);
  }

  /** Calls fn once when the budget runs out (at once if it already has); returns a canceller. */
  onExpire(fn: (error: XksError) => void): () => void {
    if (this.error) {
      fn(this.error);
      return () => undefined;
    }
    this.listeners.push(fn);
    return () => {
      const i = this.listeners.indexOf(fn);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  /** Settles with the promise, or rejects with DependencyTimeoutException once the budget is spent. */
  race<T>(work: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const cancel = this.onExpire(reject);
      work.then(
        (v) => {
          cancel();
          resolve(v);
        },
        (e: unknown) => {
          cancel();
          reject(e);
        },
      );
    });
  }

  clear(): void {
    clearTimeout(this.timer);
    this.listeners = [];
  }
}
