/**
 * `npm run bench -- --target ...` against a deployed proxy: here a real proxy on the test token,
 * serving TLS with client certificates required (mTLS), benchmarked by the compiled bench
 * (dist-bench/bench/run.js, built before the run by test/support/global-setup.ts) as a separate process, briefly and at a low rate.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ProxyApp } from '../src/app';
import { makePki, Pki } from './support/pki';
import { keyStoreWithKeys, newCredential, startProxy, testConfig } from './support/proxy';

const BENCH = join(__dirname, '..', 'dist-bench', 'bench', 'run.js');
const cred = newCredential();
let pki: Pki;
let app: ProxyApp;
let dir: string;

beforeAll(async () => {
  pki = makePki();
  dir = mkdtempSync(join(tmpdir(), 'xks-bench-target-'));
  app = await startProxy(
    testConfig([keyStoreWithKeys('bt', '/bt', [cred], [{ id: 'bench-1', label: 'test-key-1' }, { id: 'bench-2', label: 'test-key-2' }])], {
      server: {
        insecurePlainHttp: false,
        tls: { certFile: pki.serverCert, keyFile: pki.serverKey, clientCaFile: pki.caCert, allowedClientSubjects: ['load-tester'] },
      },
    }),
  );
});
afterAll(async () => {
  await app.stop(1000);
  rmSync(dir, { recursive: true, force: true });
  rmSync(pki.dir, { recursive: true, force: true });
});

/** The fields of the bench's results file (bench/run.ts writes it) that this test reads. */
interface Step {
  requests: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  errorNames: Record<string, number>;
}
interface BenchResult {
  baseline: string;
  proxy: { target: string; basePath: string; mtls: boolean };
  options: { kmsCheckSeconds: number };
  fixed: { proxy: Step; baseline?: Step }[];
  max: { proxy: Step[]; baseline: Step[] };
  kmsCheck: { run: Step & { durationS: number; withinKmsTimeout: number } };
}

function bench(secret: string, extra: string[] = []): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const secretFile = join(dir, `secret-${Math.random().toString(36).slice(2)}`);
  writeFileSync(secretFile, `${secret}\n`, { mode: 0o600 });
  const client = pki.client('load-tester');
  const args = [
    BENCH,
    ...['--target', `https://localhost:${app.port}/bt`, '--access-key-id', cred.accessKeyId, '--secret-file', secretFile, '--key-id', 'bench-1,bench-2'],
    ...['--ca', pki.caCert, '--cert', client.cert, '--key', client.key],
    ...['--mode', 'both', '--rates', '40', '--duration', '2', '--connections', '4', '--steps', '1,2', '--step-duration', '1', '--warmup', '0', '--ramp', '0'],
    // No --kms-check-seconds: --duration bounds the KMS-shaped check too.
    ...['--pool', '40', '--out', join(dir, 'results')],
    ...extra,
  ];
  return new Promise((resolve) => {
    const child = spawn('node', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

test('measures a deployed proxy over mTLS: fixed rate, max and the KMS-shaped check, no baseline, JSON and SVG', async () => {
  const r = await bench(cred.secretAccessKey);
  expect({ code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ code: 0, stderr: '' });
  expect(r.stderr).toMatch(/no baseline/);
  expect(r.stdout).toMatch(/FIXED RATE/);
  expect(r.stdout).toMatch(/KMS-SHAPED CHECK.*1800 req\/s/);
  expect(r.stdout).toMatch(/within KMS's limits|NOT within KMS's limits/);
  const files = readdirSync(join(dir, 'results'));
  expect(files.filter((f) => f.endsWith('.svg'))).toHaveLength(1);
  const result = JSON.parse(readFileSync(join(dir, 'results', files.find((f) => f.endsWith('.json')) as string), 'utf8')) as BenchResult;
  expect(result.baseline).toMatch(/no baseline/);
  expect(result.proxy).toMatchObject({ target: `https://localhost:${app.port}/bt`, basePath: '/bt/kms/xks/v1', mtls: true });
  const fixed = result.fixed[0]!.proxy;
  expect(result.fixed[0]!.baseline).toBeUndefined();
  expect(fixed.requests).toBeGreaterThan(40);
  expect({ non2xx: fixed.non2xx, errors: fixed.errors, timeouts: fixed.timeouts, names: fixed.errorNames }).toEqual({ non2xx: 0, errors: 0, timeouts: 0, names: {} });
  expect(result.max.proxy.length).toBeGreaterThanOrEqual(1);
  expect(result.max.baseline).toEqual([]);
  for (const s of result.max.proxy) expect(s.non2xx + s.errors).toBe(0);
  expect(result.kmsCheck.run.requests).toBeGreaterThan(0);
  expect(result.options.kmsCheckSeconds).toBe(2);
  expect(result.kmsCheck.run.durationS).toBeLessThan(3); // measured wall time of the 2 s run
  expect(result.kmsCheck.run.withinKmsTimeout).toBeGreaterThan(0);
  expect(JSON.stringify(result)).not.toContain(cred.secretAccessKey);
}, 90_000);

test('a wrong secret is reported as an authentication failure, before any load, with exit code 1', async () => {
  const r = await bench(newCredential().secretAccessKey);
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/HTTP 401 AuthenticationFailedException/);
  expect(r.stderr).toMatch(/check --access-key-id, --secret-file and --region/);
  expect(r.stderr).not.toMatch(/\n\s+at /); // one line, no stack trace
  expect(r.stdout).not.toMatch(/FIXED RATE/);
}, 60_000);

test('an unknown CA is reported as a TLS problem', async () => {
  const r = await bench(cred.secretAccessKey, ['--ca', pki.otherCaCert]);
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/cannot reach https:\/\/localhost:\d+\/bt\/kms\/xks\/v1: .*--ca/);
}, 60_000);
