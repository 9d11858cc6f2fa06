import { soak } from '../soak';

/**
 * The soak run in its short CI configuration (bench/soak.ts runs it longer): mixed traffic through
 * config reloads, credential rotation, a key disabled and enabled, HSM errors, a slow HSM and the loss
 * of one HSM of a fleet of two (which must fail no request), then SIGTERM under load. Runs the build that test/support/global-setup.ts makes first.
 */
it('loses nothing and returns nothing wrong under faults and changes', async () => {
  const r = await soak(8, 600);
  expect(r.events.filter((e) => e.includes('FAILED'))).toEqual([]);
  expect(r.mismatches).toBe(0);
  expect(r.unexpected).toEqual({});
  // Refusals outside the fault windows are right answers (a loop turn blocked past half the deadline, e.g. while
  // an admin command starts on the same two cores), but must stay rare on a calm run.
  expect(r.throttledOutsideFaults).toBeLessThan(r.answered * 0.05);
  expect(r.connectionErrorsBeforeTerm).toBe(0);
  expect(r.verified).toBeGreaterThan(1000);
  expect(r.byOutcome.InternalException).toBeGreaterThan(0); // the HSM error window happened
  expect(r.byOutcome.DependencyTimeoutException).toBeGreaterThan(0); // so did the slow window
  expect(r.byOutcome.InvalidStateException).toBeGreaterThan(0); // and the disabled key
  expect(r.events.filter((e) => /HSM b (lost|returns)/.test(e))).toHaveLength(2); // and the HSM loss, which `unexpected` shows cost nothing
  expect(r.exitCode).toBe(0);
  expect(r.auditLines).toBe(r.answered);
}, 60_000);
