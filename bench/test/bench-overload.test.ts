/**
 * The stress modes of the bench (`--mode overload`, `--mode hostile`), run for a second or two each at
 * a low load against a real proxy on a fresh SoftHSM2 token, as separate processes of the compiled
 * bench (dist-bench/bench/run.js, which test/support/global-setup.ts builds first). What is checked is the bench's bookkeeping, which
 * must hold on any proxy and any box; the figures themselves belong in bench/README.md.
 */
import { expect } from '@jest/globals';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunStats } from '../lib/load';
import { overloadStep, StatusCollector, verdict, type Verdict } from '../lib/overload';
import type { HostileResult } from '../lib/report';
import type { OverloadResult } from '../lib/stress';
import { benchJs } from '../lib/paths';

const BENCH = benchJs('run.js');
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'xks-bench-stress-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The fields of the results file (bench/run.ts) that the stress modes write. */
interface StressFile {
  overload: OverloadResult;
  verdicts: Pick<Verdict, 'payload' | 'pass' | 'line'>[];
  hostile: HostileResult;
}

function bench(out: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; result: Partial<StressFile>; svg: string }> {
  const common = ['--warmup', '0', '--ramp', '0.3', '--pool', '40', '--workers', '1', '--log-level', 'info', '--out', join(dir, out)];
  return new Promise((resolve) => {
    const child = spawn('node', [BENCH, ...common, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('exit', (code) => {
      let files: string[] = [];
      try {
        files = readdirSync(join(dir, out));
      } catch {
        /* nothing written */
      }
      const json = files.find((f) => f.endsWith('.json'));
      const svg = files.find((f) => f.endsWith('.svg'));
      resolve({
        code,
        stdout,
        stderr,
        result: json ? (JSON.parse(readFileSync(join(dir, out, json), 'utf8')) as Partial<StressFile>) : {},
        svg: svg ? readFileSync(join(dir, out, svg), 'utf8') : '',
      });
    });
  });
}

const sum = (o: Record<string, number>): number => Object.values(o).reduce((a, b) => a + b, 0);

test('overload: measures capacity per payload, offers multiples of it, splits answers by status, samples probes and memory, gives a verdict', async () => {
  const r = await bench('overload', [
    ...['--mode', 'overload', '--payload', 'both', '--capacity-steps', '1', '--capacity-step-duration', '1'],
    ...['--multiples', '0.2,3', '--duration', '1.5', '--connections', '4', '--max-connections', '64'],
  ]);
  expect({ code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ code: 0, stderr: '' });
  const o = r.result.overload!;
  for (const payload of ['small', 'large']) {
    expect(o.capacity[payload]!.measured).toHaveLength(1);
    expect(o.capacity[payload]!.goodput).toBeGreaterThan(0);
    expect(r.stdout).toMatch(new RegExp(`verdict ${payload}: (PASS|FAIL) at 3x capacity`));
  }
  expect(o.steps.map((s) => `${s.payload} ${s.multiple}`)).toEqual(['small 0.2', 'small 3', 'large 0.2', 'large 3']);
  for (const s of o.steps) {
    expect(s.offeredRate).toBe(Math.max(1, Math.round(o.capacity[s.payload]!.goodput * s.multiple)));
    // Every measured answer lands in exactly one column.
    expect(s.ok.n + s.shed.n + s.unavailable.n + sum(s.otherStatus)).toBe(s.run.requests);
    expect(s.goodput).toBeLessThanOrEqual(Math.ceil(s.ok.n / s.measuredS));
    // A local proxy: its readiness and memory are sampled (null only against a remote target).
    for (const probe of [s.readyz!, s.opsHealthz!, s.healthz!, s.health]) {
      expect(probe.sent).toBeGreaterThanOrEqual(5); // every 200 ms over 1.5 s
      expect(sum(probe.answers)).toBe(probe.sent);
    }
    // Sent by the open-loop generator (plain HTTP), which accounts for every send it was due.
    const g = s.run.openLoop!;
    expect(g.written + g.noConnection + g.unsentAtEnd).toBe(g.scheduled);
    expect(g.written).toBeGreaterThan(0);
    expect(s.rss!.peakMB).toBeGreaterThanOrEqual(s.rss!.startMB);
    expect(s.rss!.startMB).toBeGreaterThan(20);
  }
  // At a fifth of capacity the proxy answers all it is sent, and the load generator keeps its schedule.
  const light = o.steps[0]!;
  expect(light.ok.n).toBeGreaterThan(0);
  expect(light.sentRate).toBeGreaterThan(light.offeredRate * 0.5);
  expect(r.result.verdicts!.map((v) => v.payload)).toEqual(['small', 'large']);
  expect(r.stdout).toMatch(/OVERLOAD .*capacity small \d+ req\/s, large \d+ req\/s/);
  expect(r.svg).toMatch(/Goodput \(200 within 250 ms\)/);
}, 120_000);

test('hostile: the valid mix alone, then with hostile connections of every kind on top; nothing valid lost, output growth measured', async () => {
  const r = await bench('hostile', ['--mode', 'hostile', '--rates', '80', '--duration', '2', '--hostile-share', '0.5', '--connections', '8']);
  expect({ code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ code: 0, stderr: '' });
  const h = r.result.hostile!;
  expect(h.validLost).toBe(0);
  for (const s of [h.calm, h.loaded]) {
    expect(s.requests).toBeGreaterThan(80);
    expect({ non2xx: s.non2xx, names: s.errorNames }).toEqual({ non2xx: 0, names: {} });
  }
  for (const [kind, k] of Object.entries(h.hostile.kinds)) {
    expect([kind, k.sent]).toEqual([kind, expect.any(Number)]);
    expect(k.sent).toBeGreaterThanOrEqual(5);
    expect(k.connectErrors).toBe(0);
  }
  const { 'bad-signature': bad, 'oversized-body': big, 'slow-headers': slow } = h.hostile.kinds;
  expect(bad.answered['401']).toBeGreaterThan(0);
  expect(Object.keys(big.answered).some((s) => /^[45]\d\d$/.test(s))).toBe(true);
  // A slow client is either still trickling at the end or was cut off by the proxy, nothing else.
  expect(slow.openAtEnd + slow.closedByProxy).toBe(slow.sent);
  expect(h.output!.calm.logBytes).toBeGreaterThan(0);
  expect(h.output!.loaded.auditLines).toBeGreaterThan(0);
  expect(h.rss!.peakMB).toBeGreaterThan(20);
  expect(h.health.sent).toBeGreaterThanOrEqual(5);
  expect(r.stdout).toMatch(/valid requests without an answer: 0 \(none lost\)/);
  expect(r.svg).toMatch(/with 50% hostile/);
}, 120_000);

describe("the verdict against issue 22's bar", () => {
  const probe = (ok: number, bad: Record<string, number> = {}) => {
    const sent = ok + Object.values(bad).reduce((a, b) => a + b, 0);
    return { sent, okShare: ok / sent, answers: { '200': ok, ...bad }, latencyMs: { n: sent, p50: 1, p99: 2, max: 2 } };
  };
  /** A 10 s step at `multiple` x 1000 req/s capacity with these answers: [status, latency ms, how many]. */
  const step = (multiple: number, answers: [number, number, number][], probes: Parameters<typeof overloadStep>[3] = { readyz: probe(50), opsHealthz: probe(50), healthz: probe(50), health: probe(50) }, offered = true) => {
    const c = new StatusCollector();
    let n = 0;
    for (const [status, ms, count] of answers) for (let i = 0; i < count; i++, n++) c.push(status, ms, 5000);
    const run = { durationS: 10, rampS: 0, connections: 900, errors: 0, timeouts: 0, errorNames: {}, late: 0, requests: n } as unknown as RunStats;
    return overloadStep({ payload: 'small', multiple, capacity: 1000, offeredRate: offered ? multiple * 1000 : 0 }, run, c, probes, null);
  };

  test('passes when 70% of capacity is served within the deadline and readiness answers 200 throughout, however slow the refusals', () => {
    const v = verdict('small', [step(1, [[200, 20, 10_000]]), step(3, [[200, 40, 7_500], [429, 900, 2_000]])]);
    expect(v).toMatchObject({ pass: true, step: { multiple: 3, goodput: 750, goodputShare: 0.75, shed: { n: 2_000 } } });
    expect(v.line).toMatch(/^verdict small: PASS at 3x capacity.*ops \/readyz and \/healthz 200 throughout/);
  });

  test('fails on low goodput (late 200s do not count, as the client times them) or a readiness probe not answered 200', () => {
    const late = verdict('small', [step(3, [[200, 40, 5_000], [200, 400, 4_000], [429, 2, 21_000]])]);
    expect(late.pass).toBe(false);
    expect(late.line).toMatch(/goodput 500\/s is 50% of capacity/);
    const unready = verdict('small', [step(3, [[200, 40, 9_000]], { readyz: probe(49, { '503': 1 }), opsHealthz: probe(48, { timeout: 2 }), healthz: probe(50), health: probe(10, { timeout: 40 }) })]);
    expect(unready.line).toMatch(/FAIL.*ops \/readyz answered 200 to 98\.0% of probes.*ops \/healthz answered 200 to 96\.0% of probes \(\{"200":48,"timeout":2\}\)/);
    // GetHealthStatus is reported, not judged: it queues with the customer requests (bench/README.md).
    expect(unready.line).not.toMatch(/health answered/);
  });

  test("judges ops /readyz and /healthz; the XKS port's /healthz only when there is no ops port (a deployed proxy)", () => {
    const xksSlow = { readyz: probe(50), opsHealthz: probe(50), healthz: probe(45, { timeout: 5 }), health: probe(50) };
    const local = verdict('small', [step(3, [[200, 40, 8_000]], xksSlow)]);
    expect(local.pass).toBe(true);
    expect(local.line).toMatch(/ops \/readyz and \/healthz 200 throughout \(XKS-port \/healthz, reported not judged: 200 to 90\.0%\)/);
    const remote = verdict('small', [step(3, [[200, 40, 8_000]], { ...xksSlow, readyz: null, opsHealthz: null })]);
    expect(remote.pass).toBe(false);
    expect(remote.line).toMatch(/XKS-port \/healthz answered 200 to 90\.0% of probes/);
  });

  test('judges the nearest step at or above 3x, and says so when there is none; a closed-loop flood by its connections', () => {
    expect(verdict('small', [step(2, [[200, 5, 20_000]]), step(5, [[200, 40, 9_000], [429, 2, 41_000]]), step(4, [[200, 40, 1_000]])]).step?.multiple).toBe(4);
    expect(verdict('small', [step(2, [[200, 5, 20_000]])])).toMatchObject({ pass: false, line: expect.stringMatching(/no step at >= 3x capacity/) });
    expect(verdict('small', [step(3, [[200, 40, 8_000]], undefined, false)]).line).toMatch(/PASS at 900 connections \(3x the capacity's, closed loop/);
  });
});
