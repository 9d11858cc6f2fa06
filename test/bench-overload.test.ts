/**
 * The stress modes of the bench (`--mode overload`, `--mode hostile`), run for a second or two each at
 * a low load against a real proxy on a fresh SoftHSM2 token, as separate processes of the compiled
 * bench (dist/bench/run.js, built by `npx tsc`). What is checked is the bench's bookkeeping, which
 * must hold on any proxy and any box; the figures themselves belong in bench/README.md.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const BENCH = join(__dirname, '..', 'dist', 'bench', 'run.js');
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'xks-bench-stress-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function bench(out: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; result: Record<string, any>; svg: string }> {
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
        result: json ? JSON.parse(readFileSync(join(dir, out, json), 'utf8')) : {},
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
  const o = r.result.overload;
  for (const payload of ['small', 'large']) {
    expect(o.capacity[payload].measured).toHaveLength(1);
    expect(o.capacity[payload].goodput).toBeGreaterThan(0);
    expect(r.stdout).toMatch(new RegExp(`verdict ${payload}: (PASS|FAIL) at 3x capacity`));
  }
  expect(o.steps.map((s: any) => `${s.payload} ${s.multiple}`)).toEqual(['small 0.2', 'small 3', 'large 0.2', 'large 3']);
  for (const s of o.steps) {
    expect(s.offeredRate).toBe(Math.max(1, Math.round(o.capacity[s.payload].goodput * s.multiple)));
    // Every measured answer lands in exactly one column.
    expect(s.ok.n + s.shed.n + s.unavailable.n + sum(s.otherStatus)).toBe(s.run.requests);
    expect(s.goodput).toBeLessThanOrEqual(Math.ceil(s.ok.n / s.measuredS));
    for (const probe of [s.readyz, s.health]) {
      expect(probe.sent).toBeGreaterThanOrEqual(5); // every 200 ms over 1.5 s
      expect(sum(probe.answers)).toBe(probe.sent);
    }
    expect(s.rss.peakMB).toBeGreaterThanOrEqual(s.rss.startMB);
    expect(s.rss.startMB).toBeGreaterThan(20);
  }
  // At a fifth of capacity the proxy answers all it is sent, and the load generator keeps its schedule.
  const light = o.steps[0];
  expect(light.ok.n).toBeGreaterThan(0);
  expect(light.sentRate).toBeGreaterThan(light.offeredRate * 0.5);
  expect(r.result.verdicts.map((v: any) => v.payload)).toEqual(['small', 'large']);
  expect(r.stdout).toMatch(/OVERLOAD .*capacity small \d+ req\/s, large \d+ req\/s/);
  expect(r.svg).toMatch(/Goodput \(200 within 250 ms\)/);
}, 120_000);

test('hostile: the valid mix alone, then with hostile connections of every kind on top; nothing valid lost, output growth measured', async () => {
  const r = await bench('hostile', ['--mode', 'hostile', '--rates', '80', '--duration', '2', '--hostile-share', '0.5', '--connections', '8']);
  expect({ code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ code: 0, stderr: '' });
  const h = r.result.hostile;
  expect(h.validLost).toBe(0);
  for (const s of [h.calm, h.loaded]) {
    expect(s.requests).toBeGreaterThan(80);
    expect({ non2xx: s.non2xx, names: s.errorNames }).toEqual({ non2xx: 0, names: {} });
  }
  for (const [kind, k] of Object.entries<any>(h.hostile.kinds)) {
    expect([kind, k.sent]).toEqual([kind, expect.any(Number)]);
    expect(k.sent).toBeGreaterThanOrEqual(5);
    expect(k.connectErrors).toBe(0);
  }
  const { 'bad-signature': bad, 'oversized-body': big, 'slow-headers': slow } = h.hostile.kinds;
  expect(bad.answered['401']).toBeGreaterThan(0);
  expect(Object.keys(big.answered).some((s) => /^[45]\d\d$/.test(s))).toBe(true);
  // A slow client is either still trickling at the end or was cut off by the proxy, nothing else.
  expect(slow.openAtEnd + slow.closedByProxy).toBe(slow.sent);
  expect(h.output.calm.logBytes).toBeGreaterThan(0);
  expect(h.output.loaded.auditLines).toBeGreaterThan(0);
  expect(h.rss.peakMB).toBeGreaterThan(20);
  expect(h.health.sent).toBeGreaterThanOrEqual(5);
  expect(r.stdout).toMatch(/valid requests without an answer: 0 \(none lost\)/);
  expect(r.svg).toMatch(/with 50% hostile/);
}, 120_000);
