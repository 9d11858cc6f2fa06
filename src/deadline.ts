import { XksError } from './errors';

/**
 * A per-request time budget. KMS gives up after 250 ms; answering DependencyTimeoutException before
 * that tells it (and the operator's metrics) the HSM was slow, instead of a silent socket timeout.
 */
export class Deadline {
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;

  constructor(ms: number) {
    this.timer = setTimeout(
      () => this.controller.abort(new XksError('DependencyTimeoutException', `the HSM did not answer within ${ms} ms`)),
      ms,
    );
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Settles with the promise, or rejects with DependencyTimeoutException once the budget is spent. */
  race<T>(work: Promise<T>): Promise<T> {
    const signal = this.controller.signal;
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      work.then(
        (v) => {
          signal.removeEventListener('abort', onAbort);
          resolve(v);
        },
        (e) => {
          signal.removeEventListener('abort', onAbort);
          reject(e);
        },
      );
    });
  }

  clear(): void {
    clearTimeout(this.timer);
  }
}
