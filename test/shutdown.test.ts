import { spawn, ChildProcess } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import aws4 from 'aws4';
import { stringify } from 'yaml';
import { keyMetadata, keyStoreWithKeys, newCredential, testConfig } from './support/proxy';

const MAIN = join(__dirname, '..', 'dist', 'src', 'main.js');
const cred = newCredential();

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = http.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function get(port: number, path: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve) =>
    http
      .get({ host: '127.0.0.1', port, path }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      })
      .on('error', () => resolve({ status: 0, text: '' })),
  );
}

/** Starts `node dist/src/main.js` on a fresh config and waits for /readyz. */
async function startProcess(dir: string, workers: number): Promise<{ child: ChildProcess; port: number; opsPort: number }> {
  const port = await freePort();
  const opsPort = await freePort();
  const config = testConfig([keyStoreWithKeys('t', '/t', [cred], [{ id: 'k', label: 'test-key-1' }])], {
    server: { port, workers },
    ops: { port: opsPort },
    audit: { file: join(dir, 'audit.log') },
  });
  writeFileSync(join(dir, 'config.yaml'), stringify(config));
  const child = spawn('node', [MAIN, '--config', join(dir, 'config.yaml')], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.resume();
  child.stderr.resume();
  for (let i = 0; i < 150; i++) {
    if ((await get(opsPort, '/readyz')).status === 200) return { child, port, opsPort };
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('proxy did not become ready');
}

describe('graceful shutdown (a real proxy process)', () => {
  let dir: string;
  let child: ChildProcess;
  let port: number;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'xks-term-'));
    ({ child, port } = await startProcess(dir, 1));
  });

  afterAll(() => {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers every request it accepted, writes one audit line for each, and exits 0', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    const outcomes: (number | string)[] = [];
    let afterTerm = 0;
    let termSent = false;
    const one = (i: number): Promise<void> => {
      const body = JSON.stringify({ requestMetadata: keyMetadata('Encrypt', { kmsRequestId: `term-${i}` }), plaintext: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=', encryptionAlgorithm: 'AES_GCM' });
      const req = { host: `127.0.0.1:${port}`, path: '/t/kms/xks/v1/keys/k/encrypt', method: 'POST', service: 'kms-xks-proxy', region: 'us-east-1', body, headers: { 'content-type': 'application/json' } };
      aws4.sign(req, cred);
      return new Promise((resolve) => {
        const r = http.request({ host: '127.0.0.1', port, path: req.path, method: 'POST', headers: req.headers as http.OutgoingHttpHeaders, agent }, (res) => {
          res.resume();
          res.on('end', () => {
            outcomes.push(res.statusCode ?? 0);
            if (termSent) afterTerm++;
            resolve();
          });
        });
        r.on('error', (e: NodeJS.ErrnoException) => {
          outcomes.push(e.code ?? 'error');
          resolve();
        });
        r.end(body);
      });
    };
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const all: Promise<void>[] = [];
    for (let i = 0; i < 600; i++) {
      all.push(one(i));
      if (i === 200) {
        await new Promise((r) => setTimeout(r, 20));
        termSent = true;
        child.kill('SIGTERM');
      }
    }
    await Promise.all(all);
    agent.destroy();
    expect(await exited).toBe(0);

    const answered = outcomes.filter((o) => typeof o === 'number');
    const refused = outcomes.filter((o) => typeof o !== 'number');
    expect(answered.every((s) => s === 200)).toBe(true);
    expect(afterTerm).toBeGreaterThan(0); // requests were in flight when SIGTERM arrived
    // Only requests the proxy never read may fail, and only as connection errors.
    for (const r of refused) expect(['ECONNREFUSED', 'ECONNRESET', 'EPIPE']).toContain(r);
    const audit = readFileSync(join(dir, 'audit.log'), 'utf8').trim().split('\n').filter((l) => l.includes('"term-'));
    expect(audit.length).toBe(answered.length);
  });
});

describe('cluster mode (workers: 2)', () => {
  let dir: string;
  let proc: { child: ChildProcess; port: number; opsPort: number };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'xks-cluster-'));
    proc = await startProcess(dir, 2);
  });
  afterAll(() => {
    proc.child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves from both workers, aggregates their metrics in the primary, and stops cleanly', async () => {
    const health = JSON.stringify({ requestMetadata: { kmsRequestId: 'c', kmsOperation: 'KmsHealthCheck' } });
    for (let i = 0; i < 20; i++) {
      const req = { host: `127.0.0.1:${proc.port}`, path: '/t/kms/xks/v1/health', method: 'POST', service: 'kms-xks-proxy', region: 'us-east-1', body: health, headers: { 'content-type': 'application/json' } };
      aws4.sign(req, cred);
      const status = await new Promise<number>((resolve) => {
        const r = http.request({ host: '127.0.0.1', port: proc.port, path: req.path, method: 'POST', headers: req.headers as http.OutgoingHttpHeaders, agent: false }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        r.end(health);
      });
      expect(status).toBe(200);
    }
    expect(JSON.parse((await get(proc.opsPort, '/readyz')).text)).toEqual({ ready: true, workersReady: 2, workers: 2 });
    const metrics = (await get(proc.opsPort, '/metrics')).text;
    expect(metrics).toMatch(/xks_requests_total\{key_store="t",operation="GetHealthStatus",error_name="none",retryable="false"\} 20/);
    // Each worker keeps its own audit chain.
    const exited = new Promise<number | null>((resolve) => proc.child.once('exit', (code) => resolve(code)));
    proc.child.kill('SIGTERM');
    expect(await exited).toBe(0);
    const lines = ['audit.log.worker1', 'audit.log.worker2'].map((f) => readFileSync(join(dir, f), 'utf8').trim().split('\n').length);
    expect(lines[0]! + lines[1]!).toBe(20);
  });
});
