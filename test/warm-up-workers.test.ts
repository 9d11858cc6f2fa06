import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { keyStoreWithKeys, newCredential, testConfig } from './support/proxy';

/**
 * The request-path warm-up of every cluster worker answers all of its own requests (issue 21: a bench
 * start with two workers logged `failures: {"401": 7}` of 1024). Each worker's warm-up server listened
 * on port 0 through the cluster primary, which hands every worker the same socket, so a warm-up
 * connection could land on the other worker's warm-up server, which knows another credential. Many
 * requests make the two warm-ups overlap for seconds: on the old code every run of this test failed.
 */
const MAIN = join(__dirname, '..', 'dist', 'src', 'main.js');
const REQUESTS = 4096;

interface WarmUpLine {
  msg: string;
  pid: number;
  requests?: number;
  answered?: Record<string, number>;
  failures?: Record<string, number>;
}

let dir: string;
beforeAll(() => (dir = mkdtempSync(join(tmpdir(), 'xks-warm-up-workers-'))));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test(`two workers each answer all ${REQUESTS} of their warm-up requests`, async () => {
  const config = testConfig([keyStoreWithKeys('w', '/w', [newCredential()], [{ id: 'k', label: 'test-key-1' }])], {
    server: { workers: 2, warmUpRequests: REQUESTS },
    ops: { enabled: false },
  });
  writeFileSync(join(dir, 'config.yaml'), stringify(config));
  const child = spawn('node', [MAIN, '--config', join(dir, 'config.yaml')], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, XKS_LOG_LEVEL: 'info' } });
  const exited = new Promise((r) => child.once('exit', r));
  let output = '';
  const results: WarmUpLine[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`fewer than two warm-up results in 90 s:\n${output}`)), 90_000);
      child.stderr.on('data', (c: Buffer) => (output += c.toString()));
      child.stdout.on('data', (c: Buffer) => {
        output += c.toString();
        const lines = output.split('\n').slice(0, -1).filter((l) => l.includes('warm'));
        results.splice(0, results.length, ...lines.map((l) => JSON.parse(l) as WarmUpLine).filter((l) => /^request.path warm/.test(l.msg)));
        if (results.length >= 2) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
  expect(new Set(results.map((r) => r.pid)).size).toBe(2);
  for (const r of results) {
    expect({ msg: r.msg, failures: r.failures }).toEqual({ msg: 'request path warmed up', failures: undefined });
    expect(Object.values(r.answered ?? {}).reduce((a, b) => a + b, 0)).toBe(REQUESTS);
  }
}, 120_000);
