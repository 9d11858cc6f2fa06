/** Records how a promise settled, without an unhandled rejection. */
export function track<T>(p: Promise<T>): { value?: T; error?: unknown; settled: boolean } {
  const t: { value?: T; error?: unknown; settled: boolean } = { settled: false };
  p.then(
    (v) => Object.assign(t, { value: v, settled: true }),
    (e: unknown) => Object.assign(t, { error: e, settled: true }),
  );
  return t;
}

/** Polls fn until ok says so or ms pass; returns the last value (the caller's expect says what was wanted). */
export async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 10_000, everyMs = 50): Promise<T> {
  const end = Date.now() + ms;
  let v = await fn();
  while (!ok(v) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, everyMs));
    v = await fn();
  }
  return v;
}
