import http from 'node:http';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import aws4 from 'aws4';
import { get, keyMetadata, keyStoreWithKeys, newCredential, testConfig } from './support/proxy';
import { until } from './support/promises';
import { ProxyProcess, startProxyProcess } from './support/proxy-process';

const cred = newCredential();

/** A real proxy process with `workers` workers, its audit file in a directory of its own. */
async function startProcess(workers: number): Promise<{ proc: ProxyProcess; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'xks-term-'));
  const config = testConfig([keyStoreWithKeys('t', '/t', [cred], [{ id: 'k', label: 'test-key-1' }])], {
    server: { workers },
    audit: { file: join(dir, 'audit.log') },
  });
  return { proc: await startProxyProcess(config, { dir }), dir };
}

describe('graceful shutdown (a real proxy process)', () => {
  let dir: string;
  let proc: ProxyProcess;

  beforeAll(async () => ({ proc, dir } = await startProcess(1)));
  afterAll(() => proc?.stop());

  it('answers every request it accepted, writes one audit line for each, and exits 0', async () => {
    const { port } = proc;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    const outcomes: (number | string)[] = [];
    let afterTerm = 0;
    let termSent = false;
    let firstAnswered!: () => void;
    const firstAnswer = new Promise<void>((r) => (firstAnswered = r));
    const one = (i: number): Promise<void> => {
      const body = JSON.stringify({ requestMetadata: keyMetadata('Encrypt', { kmsRequestId: `term-${i}` }), plaintext: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=', encryptionAlgorithm: 'AES_GCM' });
      const req = { host: `127.0.0.1:${port}`, path: '/t/kms/xks/v1/keys/k/encrypt', method: 'POST', service: 'kms-xks-proxy', region: 'us-east-1', body, headers: { 'content-type': 'application/json' } };
      aws4.sign(req, cred);
      return new Promise((resolve) => {
        const r = http.request({ host: '127.0.0.1', port, path: req.path, method: 'POST', headers: req.headers as http.OutgoingHttpHeaders, agent }, (res) => {
          res.resume();
          res.on('end', () => {
            outcomes.push(res.statusCode ?? 0);
            firstAnswered();
            if (termSent) afterTerm++;
            resolve();
          });
        });
        r.on('error', (e: NodeJS.ErrnoException) => {
          outcomes.push(e.code ?? 'error');
          firstAnswered();
          resolve();
        });
        r.end(body);
      });
    };
    const all: Promise<void>[] = [];
    for (let i = 0; i < 600; i++) {
      all.push(one(i));
      if (i === 200) {
        // SIGTERM once the first outcome is in: requests are in flight then, and more keep coming.
        await firstAnswer;
        termSent = true;
        proc.kill('SIGTERM');
      }
    }
    await Promise.all(all);
    agent.destroy();
    expect(await proc.exited).toBe(0);

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

describe('graceful shutdown: requests read when SIGTERM arrives', () => {
  let proc: ProxyProcess;

  beforeAll(async () => ({ proc } = await startProcess(1)));
  afterAll(() => proc?.stop());

  it('finishes reading and answers every request whose headers it had, then exits 0', async () => {
    // Each request waits for 100 Continue, which the proxy sends only from its body-reading step: proof that
    // the request is in the proxy when SIGTERM is sent. A proxy that exited at once would reset them all.
    const pending = Array.from({ length: 8 }, (_, i) => {
      const body = JSON.stringify({ requestMetadata: keyMetadata('Encrypt', { kmsRequestId: `mid-${i}` }), plaintext: 'AAAA', encryptionAlgorithm: 'AES_GCM' });
      const req = { host: `127.0.0.1:${proc.port}`, path: '/t/kms/xks/v1/keys/k/encrypt', method: 'POST', service: 'kms-xks-proxy', region: 'us-east-1', body, headers: { 'content-type': 'application/json' } };
      aws4.sign(req, cred);
      const r = http.request({ host: '127.0.0.1', port: proc.port, path: req.path, method: 'POST', agent: false, headers: { ...(req.headers as http.OutgoingHttpHeaders), expect: '100-continue' } });
      const continued = new Promise<void>((resolve) => r.once('continue', resolve));
      const status = new Promise<number | string>((resolve) => {
        r.once('response', (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        r.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      });
      r.flushHeaders();
      return { r, body, continued, status };
    });
    await Promise.all(pending.map((p) => p.continued));
    proc.kill('SIGTERM');
    // Draining is visible on the ops port before the bodies go out.
    await until(async () => (await get(proc.opsPort, '/readyz').catch(() => ({ status: 0 }))).status === 503);
    for (const p of pending) p.r.end(p.body);
    expect(await Promise.all(pending.map((p) => p.status))).toEqual(pending.map(() => 200));
    expect(await proc.exited).toBe(0);
  });
});

describe('cluster mode (workers: 2)', () => {
  let dir: string;
  let proc: ProxyProcess;

  beforeAll(async () => ({ proc, dir } = await startProcess(2)));
  afterAll(() => proc?.stop());

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
    proc.kill('SIGTERM');
    expect(await proc.exited).toBe(0);
    const lines = ['audit.log.worker1', 'audit.log.worker2'].map((f) => readFileSync(join(dir, f), 'utf8').trim().split('\n').length);
    expect(lines[0]! + lines[1]!).toBe(20);
  });
});
