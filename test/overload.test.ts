import { expect } from '@jest/globals';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ProxyApp } from '../src/app';
import { faultyModule } from '../testbed/faulty-module';
import { until } from './support/promises';
import { get, keyMetadata, keyStoreWithKeys, newCredential, send, startProxy, testConfig, XksResponse } from './support/proxy';

/**
 * Overload: a proxy flooded beyond what its HSM can serve sheds the excess fast with 429, keeps its
 * health and readiness true, never spends HSM time on a request whose deadline has passed, and still
 * turns unready when the HSM really breaks. Real SoftHSM2 underneath a latency-adding wrapper, real HTTP.
 */
const cred = newCredential();
const P = '/o/kms/xks/v1';
const enc = { requestMetadata: keyMetadata('Encrypt'), plaintext: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=', encryptionAlgorithm: 'AES_GCM' };
const health = { requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' } };

/** Pacing of real load over real time (this suite measures the proxy under a real flood; nothing here waits for an event). */
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

describe('a proxy saturated beyond its HSM', () => {
  let app: ProxyApp;
  let dir: string;
  const { faults, create } = faultyModule();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'xks-overload-'));
    app = await startProxy(
      testConfig([keyStoreWithKeys('o', '/o', [cred], [{ id: 'k', label: 'test-key-1' }])], {
        limits: { deadlineMs: 200 },
        // Short cache: deep health checks keep running during the flood.
        hsm: { sessionPoolSize: 2, healthCacheMs: 400, reconnectBackoffMs: 20 },
        audit: { file: join(dir, 'audit.log') },
      } as never),
      create,
    );
  });
  afterAll(async () => {
    await app.stop(1000);
    rmSync(dir, { recursive: true, force: true });
  });
  afterEach(() => {
    faults.delayMs = 0;
    faults.fail = {};
    faults.inspect = undefined;
  });

  it('stays ready and healthy while it sheds, and sheds with fast 429s', async () => {
    faults.delayMs = 20; // 2 sessions x 20 ms per C_Encrypt: about 100 encrypts a second
    const results: XksResponse[] = [];
    const probes: { what: string; status: number; text: string }[] = [];
    const floodUntil = Date.now() + 2500;
    // 150 closed-loop clients: far more than 2 sessions can serve within a 200 ms deadline.
    const client = async (): Promise<void> => {
      while (Date.now() < floodUntil) results.push(await send(app.port, `${P}/keys/k/encrypt`, enc, cred));
    };
    const prober = async (): Promise<void> => {
      // Probe once the flood has made the proxy shed.
      await until(() => app.overload.overloaded(), Boolean, 2000, 5);
      while (Date.now() < floodUntil - 100) {
        const [ready, healthz, hs] = await Promise.all([get(app.opsPort as number, '/readyz'), get(app.port, '/healthz'), send(app.port, `${P}/health`, health, cred)]);
        probes.push({ what: 'readyz', status: ready.status, text: ready.text }, { what: 'healthz', status: healthz.status, text: healthz.text });
        probes.push({ what: 'GetHealthStatus', status: hs.status, text: JSON.stringify(hs.body) });
        await sleep(100);
      }
    };
    await Promise.all([...Array.from({ length: 150 }, client), prober()]);

    const count = (pred: (r: XksResponse) => boolean): number => results.filter(pred).length;
    const ok = count((r) => r.status === 200);
    const shed = count((r) => r.status === 429 && r.body.errorName === 'ThrottlingException');
    const timedOut = count((r) => r.body.errorName === 'DependencyTimeoutException');
    const summary = { total: results.length, ok, shed, timedOut, other: results.length - ok - shed - timedOut };
    console.log('flood:', JSON.stringify(summary));
    expect(summary.other).toBe(0);
    expect(shed).toBeGreaterThan(ok); // it really was saturated
    expect(ok).toBeGreaterThan(50); // and still served
    // Admission by expected wait: far fewer wait only to time out than are served (a FIFO as long as
    // maxQueue timed out 73% of requests and served 1%).
    expect(timedOut).toBeLessThan(ok / 2);

    expect(probes.length).toBeGreaterThanOrEqual(6);
    for (const p of probes) expect(p).toMatchObject({ status: 200 });
    const readiness = probes.filter((p) => p.what === 'readyz').map((p) => JSON.parse(p.text) as Record<string, unknown>);
    expect(readiness.every((r) => r.ready === true && r.hsm === 'connected')).toBe(true);
    expect(readiness.some((r) => r.overloaded === true)).toBe(true);
    for (const p of probes.filter((q) => q.what === 'GetHealthStatus')) expect(p.text).toMatch(/"healthStatus":"(ACTIVE|DEGRADED)"/);

    // Shed latency as the proxy measured it (arrival to answer), from its audit trail.
    const audit = readFileSync(join(dir, 'audit.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { operation: string; outcome: string; ms: number });
    const shedMs = audit.filter((a) => a.operation === 'Encrypt' && a.outcome === 'ThrottlingException').map((a) => a.ms);
    expect(shedMs.length).toBe(shed);
    const dist = { p50: percentile(shedMs, 50), p95: percentile(shedMs, 95), p99: percentile(shedMs, 99), max: Math.max(...shedMs) };
    console.log('shed latency ms:', JSON.stringify(dist));
    expect(dist.p95).toBeLessThan(50);

    const metrics = (await get(app.opsPort as number, '/metrics')).text;
    expect(metrics).toMatch(/xks_shed_total\{key_store="o",reason="hsm_wait"\} [1-9]/);
  }, 20_000);

  it('never calls the HSM for a request whose deadline passed while it waited (timer late on a blocked loop)', async () => {
    faults.delayMs = 80;
    let inits = 0;
    // Customer encrypts only: their HSM AAD is never empty, the background health check's is.
    faults.inspect = (method, args) => {
      if (method === 'C_EncryptInit' && (args[1] as { parameter: { aad: Buffer } }).parameter.aad.length > 0) inits++;
      return undefined;
    };
    await app.health.refresh(); // a fresh cached result: no health check runs during this test
    const pool = app.engine.poolStats();
    expect(pool.idle).toBe(2);
    // Occupy both sessions, then queue one more request behind them.
    const holders = [send(app.port, `${P}/keys/k/encrypt`, enc, cred), send(app.port, `${P}/keys/k/encrypt`, enc, cred)];
    expect(await until(() => inits, (n) => n === 2, 5000, 5)).toBe(2);
    const waiter = send(app.port, `${P}/keys/k/encrypt`, enc, cred);
    expect(await until(() => app.engine.poolStats().waiting, (n) => n === 1, 5000, 5)).toBe(1);
    // Block the event loop past the waiter's 200 ms deadline: its timer cannot fire, and the holders'
    // HSM calls come back (freeing sessions) in the same timers phase as that late deadline timer.
    const end = performance.now() + 250;
    while (performance.now() < end);
    const late = await waiter;
    await Promise.all(holders);
    expect(late.body).toMatchObject({ errorName: 'DependencyTimeoutException' });
    expect(inits).toBe(2);
  });

  it('an HSM that really fails makes readiness 503 with the reason, even right after successful traffic', async () => {
    // A success just before the failure (retried: the previous test left the loop briefly overloaded).
    const encrypt = async (): Promise<number> => (await send(app.port, `${P}/keys/k/encrypt`, enc, cred)).status;
    expect(await until(encrypt, (status) => status === 200, 5000, 5)).toBe(200);
    faults.fail = { C_Encrypt: 'CKR_FUNCTION_FAILED' };
    await app.health.refresh();
    const ready = await get(app.opsPort as number, '/readyz');
    expect(ready.status).toBe(503);
    expect(JSON.parse(ready.text)).toMatchObject({ ready: false, hsm: 'connected', ekm: 'UNAVAILABLE', reason: expect.stringContaining('CKR_FUNCTION_FAILED') });
    expect((await get(app.port, '/healthz')).status).toBe(503);
    faults.fail = {};
    await app.health.refresh();
    expect((await get(app.opsPort as number, '/readyz')).status).toBe(200);
  });
});

describe('a proxy whose event loop is the bottleneck (inline HSM calls)', () => {
  const { faults, create } = faultyModule();
  let app: ProxyApp;
  beforeAll(async () => {
    app = await startProxy(
      // eventLoopShedMs 100: the production default (half the 200 ms deadline); testConfig turns it off.
      testConfig([keyStoreWithKeys('e', '/e', [cred], [{ id: 'k', label: 'test-key-1' }])], { hsm: { asyncCalls: false, sessionPoolSize: 4 }, limits: { eventLoopShedMs: 100 } } as never),
      create,
    );
  });
  afterAll(() => app.stop(1000));

  it('sheds key operations with 429 before verifying them while the loop has a standing queue; health and readiness stay 200', async () => {
    // A slow inline HSM: 60 ms of the event loop per customer encrypt (their HSM AAD is never empty); a few queued
    // requests per loop turn put every timer sample past the 100 ms target.
    faults.inspect = (method, args) => {
      if (method === 'C_EncryptInit' && (args[1] as { parameter: { aad: Buffer } }).parameter.aad.length > 0) {
        const end = performance.now() + 60;
        while (performance.now() < end);
      }
      return undefined;
    };
    const probes: number[] = [];
    // The load comes from another process, as real clients do: requests keep arriving while this loop is busy.
    const flood = floodFromChild(app.port, '/e/kms/xks/v1/keys/k/encrypt', enc, 100, 3000);
    // Probe once the flood has made the proxy shed.
    expect(await until(() => app.overload.overloaded(), Boolean, 3000, 5)).toBe(true);
    for (let i = 0; i < 8; i++) {
      const [ready, hs] = await Promise.all([get(app.opsPort as number, '/readyz'), send(app.port, '/e/kms/xks/v1/health', health, cred)]);
      probes.push(ready.status, hs.status);
      await sleep(50);
    }
    const counts = await flood;
    faults.inspect = undefined;
    console.log('event-loop flood:', JSON.stringify(counts));
    expect(counts['200'] ?? 0).toBeGreaterThan(10);
    expect(counts['429 the proxy is overloaded; retry later'] ?? 0).toBeGreaterThan(0);
    expect(probes.every((st) => st === 200)).toBe(true);
    const metrics = (await get(app.opsPort as number, '/metrics')).text;
    expect(metrics).toMatch(/xks_shed_total\{key_store="e",reason="event_loop"\} [1-9]/);
  }, 20_000);
});

/** Closed-loop clients in a child process: counts of "status" or "status errorMessage" per answer. */
function floodFromChild(port: number, path: string, payload: unknown, connections: number, ms: number): Promise<Record<string, number>> {
  const script = `
    const http = require('node:http');
    const aws4 = require(${JSON.stringify(require.resolve('aws4'))});
    const [port, path, body, connections, ms, id, secret] = JSON.parse(process.argv[1]);
    const counts = {};
    const until = Date.now() + ms;
    const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
    const one = () => new Promise((resolve) => {
      const req = { host: '127.0.0.1:' + port, path, method: 'POST', service: 'kms-xks-proxy', region: 'us-east-1', body, headers: { 'content-type': 'application/json' } };
      aws4.sign(req, { accessKeyId: id, secretAccessKey: secret });
      const r = http.request({ host: '127.0.0.1', port, path, method: 'POST', headers: req.headers, agent }, (res) => {
        let t = '';
        res.on('data', (c) => (t += c));
        res.on('end', () => {
          const k = res.statusCode === 200 ? '200' : res.statusCode + ' ' + JSON.parse(t).errorMessage;
          counts[k] = (counts[k] || 0) + 1;
          resolve();
        });
      });
      r.on('error', (e) => ((counts[e.code] = (counts[e.code] || 0) + 1), resolve()));
      r.end(body);
    });
    Promise.all(Array.from({ length: connections }, async () => { while (Date.now() < until) await one(); })).then(() => (agent.destroy(), process.stdout.write(JSON.stringify(counts))));
  `;
  const args = JSON.stringify([port, path, JSON.stringify(payload), connections, ms, cred.accessKeyId, cred.secretAccessKey]);
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', script, args], { timeout: ms + 15_000 }, (error: Error | null, stdout: string) => (error ? reject(error) : resolve(JSON.parse(stdout) as Record<string, number>)));
  });
}

describe('a proxy whose HSM is misconfigured', () => {
  it('answers readiness 503 with the PKCS#11 reason, and says so in xks_hsm_state', async () => {
    const app = await startProxy(
      testConfig([keyStoreWithKeys('m', '/m', [cred], [{ id: 'k', label: 'test-key-1' }])], { hsm: { pin: { value: 'wrong-pin' } } } as never),
    );
    try {
      const ready = await get(app.opsPort as number, '/readyz');
      expect(ready.status).toBe(503);
      expect(JSON.parse(ready.text)).toMatchObject({ ready: false, hsm: 'misconfigured', reason: 'HSM misconfigured: C_Login returned CKR_PIN_INCORRECT' });
      const metrics = (await get(app.opsPort as number, '/metrics')).text;
      expect(metrics).toContain('xks_hsm_state{state="misconfigured"} 1');
      expect(metrics).toContain('xks_hsm_state{state="connected"} 0');
    } finally {
      await app.stop(100);
    }
  });
});
