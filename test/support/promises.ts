import { setTimeout as realSleep } from 'node:timers/promises';

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
 * polls fn every everyMs until ok says so or about ms pass, and returns the last value, so that the
 * caller's expect shows what was seen. Not for "time passes" in the code under test: that is an injected
 * clock or fake timers (test/support/clock.ts). It works under fake timers too (for work that runs on a
 * thread or in the HSM meanwhile): it sleeps with node:timers, which jest does not fake, and counts its
 * polls instead of reading the clock. ok defaults to truthiness.
 */
export async function until<T>(fn: () => T | Promise<T>, ok: (v: T) => boolean = Boolean, ms = 10_000, everyMs = 50): Promise<T> {
  let v = await fn();
  for (let polls = Math.ceil(ms / everyMs); !ok(v) && polls > 0; polls--) {
    await realSleep(everyMs);
    v = await fn();
  }
  return v;
}
