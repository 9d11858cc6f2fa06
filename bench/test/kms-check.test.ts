/** The KMS-shaped verdict of `npm run bench -- --target` (bench/lib/target.ts): lateness voids it. */
import type { RunStats } from '../lib/load';
import { kmsCheck } from '../lib/target';

describe('the KMS-shaped verdict', () => {
  /** A run that met KMS's rate and timeout, with `late` requests sent after their slot. */
  const runWith = (late: number): RunStats =>
    ({
      requests: 108_000,
      sent: 108_000,
      rps: 1800,
      latencyMs: { p50: 2, p90: 4, p99: 9, p99_9: 20, max: 40 },
      non2xx: 0,
      errors: 0,
      timeouts: 0,
      errorNames: {},
      late,
      withinKmsTimeout: 1,
    }) as unknown as RunStats;

  test('a run on schedule within the timeout is within KMS\'s limits', () => {
    expect(kmsCheck(runWith(0), 1800, 250)).toMatchObject({ withinLimits: true, problems: [] });
  });

  test('a run whose load generator sent 7.6% of the requests late is not (its latency is understated)', () => {
    const v = kmsCheck(runWith(8208), 1800, 250);
    expect(v.withinLimits).toBe(false);
    expect(v.problems).toEqual([expect.stringMatching(/^8208 requests \(7\.6%\) were sent late by the load generator.*raise --connections/)]);
  });

  test('a few late sends (pacing noise, at most 0.1%) do not void it', () => {
    expect(kmsCheck(runWith(100), 1800, 250).withinLimits).toBe(true);
  });
});
