/** Records how a promise settled, without an unhandled rejection. */
export function track<T>(p: Promise<T>): { value?: T; error?: unknown; settled: boolean } {
  const t: { value?: T; error?: unknown; settled: boolean } = { settled: false };
  p.then(
    (v) => Object.assign(t, { value: v, settled: true }),
    (e: unknown) => Object.assign(t, { error: e, settled: true }),
  );
  return t;
}

/**
 * The suites' one wait for something to happen elsewhere (a process, a server, a background check):
 * polls fn until ok says so or ms pass, and returns the last value, so that the caller's expect shows
 * what was seen. Not for "time passes" in the code under test: that is an injected clock or fake
 * timers (test/support/clock.ts). ok defaults to truthiness.
 */
export async function until<T>(fn: () => T | Promise<T>, ok: (v: T) => boolean = Boolean, ms = 10_000, everyMs = 50): Promise<T> {
  const end = Date.now() + ms;
  let v = await fn();
  while (!ok(v) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, everyMs));
    v = await fn();
  }
  return v;
}
