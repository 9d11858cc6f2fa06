/**
 * PKCS#11 leaves it to the application that no call runs while another thread initialises or finalizes
 * the library (SoftHSM2 crashes on two concurrent C_Finalize calls). The engine's control calls run on one
 * worker thread per HSM, and several HSMs may share a library, so its control calls take this lock per
 * library: C_Initialize and C_Finalize alone, every other control call shared with the rest (so that two
 * tokens of one library still log in at the same time). First come, first served: a waiting finalize
 * holds back the calls that come after it.
 */
export class LibraryLock {
  private shared = 0;
  private exclusive = false;
  private readonly waiting: { exclusive: boolean; go: () => void }[] = [];

  async run<T>(exclusive: boolean, fn: () => Promise<T>): Promise<T> {
    await this.acquire(exclusive);
    try {
      return await fn();
    } finally {
      this.release(exclusive);
    }
  }

  private free(exclusive: boolean): boolean {
    return exclusive ? !this.exclusive && this.shared === 0 : !this.exclusive;
  }

  private take(exclusive: boolean): void {
    if (exclusive) this.exclusive = true;
    else this.shared++;
  }

  private acquire(exclusive: boolean): Promise<void> {
    if (this.waiting.length === 0 && this.free(exclusive)) {
      this.take(exclusive);
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push({ exclusive, go: resolve }));
  }

  private release(exclusive: boolean): void {
    if (exclusive) this.exclusive = false;
    else this.shared--;
    for (let next = this.waiting[0]; next && this.free(next.exclusive); next = this.waiting[0]) {
      this.waiting.shift();
      this.take(next.exclusive);
      next.go();
      if (next.exclusive) return;
    }
  }
}

const locks = new Map<string, LibraryLock>();

/** The lock of the library at this path (one per process, as the library is). */
export function libraryLock(modulePath: string): LibraryLock {
  let lock = locks.get(modulePath);
  if (!lock) locks.set(modulePath, (lock = new LibraryLock()));
  return lock;
}
