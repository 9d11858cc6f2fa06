import { EngineError } from './errors';

interface Waiter<S> {
  resolve(session: S): void;
  reject(error: Error): void;
  settled: boolean;
}

/**
 * A fixed set of PKCS#11 sessions, one operation per session at a time (PKCS#11 sessions are not
 * re-entrant), with a bounded FIFO of waiters so a slow HSM turns into a 'busy' error, not an
 * unbounded queue.
 */
export class SessionPool<S> {
  private readonly idle: S[] = [];
  private readonly waiters: Waiter<S>[] = [];
  private inUse = 0;
  private closed = false;

  constructor(
    sessions: readonly S[],
    private readonly maxWaiting: number,
  ) {
    this.idle.push(...sessions);
  }

  get size(): number {
    return this.idle.length + this.inUse;
  }

  stats(): { size: number; inUse: number; idle: number; waiting: number } {
    return { size: this.size, inUse: this.inUse, idle: this.idle.length, waiting: this.waiters.length };
  }

  /** Resolves with a session; `cancel` (e.g. the request deadline) removes a still-waiting caller. */
  acquire(cancel?: (onCancel: (error: Error) => void) => void): Promise<S> {
    if (this.closed) return Promise.reject(new EngineError('unavailable', 'HSM connection is closed'));
    const s = this.idle.pop();
    if (s !== undefined) {
      this.inUse++;
      return Promise.resolve(s);
    }
    if (this.waiters.length >= this.maxWaiting) {
      return Promise.reject(new EngineError('busy', 'too many requests waiting for the HSM'));
    }
    return new Promise<S>((resolve, reject) => {
      const w: Waiter<S> = { resolve, reject, settled: false };
      this.waiters.push(w);
      cancel?.((error) => {
        if (w.settled) return;
        w.settled = true;
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(error);
      });
    });
  }

  /** Returns a healthy session, or a replacement for a broken one (null when none could be opened). */
  release(session: S | null): void {
    this.inUse--;
    if (session === null) return;
    if (this.closed) return;
    for (let w = this.waiters.shift(); w; w = this.waiters.shift()) {
      if (w.settled) continue;
      w.settled = true;
      this.inUse++;
      w.resolve(session);
      return;
    }
    this.idle.push(session);
  }

  /** Fails every waiter and hands back the idle sessions so the caller can close them. */
  drain(error: Error): S[] {
    this.closed = true;
    for (const w of this.waiters.splice(0)) {
      if (!w.settled) {
        w.settled = true;
        w.reject(error);
      }
    }
    return this.idle.splice(0);
  }
}
