import { expect } from '@jest/globals';
import type { ProxyApp } from '../src/app';
import { faultyModule } from '../testbed/faulty-module';
import { testHsm } from './support/hsm';
import { get, keyMetadata, keyStoreWithKeys, newCredential, send, startProxy, testConfig } from './support/proxy';
import { until } from './support/promises';

/** HSM faults injected at the PKCS#11 boundary, with the real SoftHSM2 underneath. */
const cred = newCredential();
const P = '/x/kms/xks/v1';
const enc = { requestMetadata: keyMetadata('GenerateDataKey'), plaintext: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=', encryptionAlgorithm: 'AES_GCM' };
const health = { requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' } };

describe('HSM faults', () => {
  let app: ProxyApp;
  const { faults, create } = faultyModule();

  beforeAll(async () => {
    app = await startProxy(
      testConfig([keyStoreWithKeys('x', '/x', [cred], [{ id: 'k', label: 'test-key-1' }])], {
        limits: { deadlineMs: 100, maxQueue: 4 },
        hsm: { healthCacheMs: 200, reconnectBackoffMs: 20, sessionPoolSize: 2 },
      } as never),
      create,
    );
  });
  afterAll(() => app.stop(1000));
  afterEach(async () => {
    faults.fail = {};
    faults.delayMs = 0;
    await until(() => send(app.port, `${P}/keys/k/encrypt`, enc, cred), (r) => r.status === 200);
  });

  it('an HSM error is InternalException, and the next request works (the session is replaced)', async () => {
    faults.fail = { C_Encrypt: 'CKR_FUNCTION_FAILED' };
    expect((await send(app.port, `${P}/keys/k/encrypt`, enc, cred)).body).toMatchObject({ errorName: 'InternalException', errorMessage: expect.stringContaining('CKR_FUNCTION_FAILED') });
    faults.fail = {};
    expect((await send(app.port, `${P}/keys/k/encrypt`, enc, cred)).status).toBe(200);
    expect(app.engine.poolStats().size).toBe(2);
  });

  it('sessions closed under the proxy (a real C_CloseAllSessions): it reconnects by itself', async () => {
    const real = faults.real!;
    const slot = real.C_GetSlotList(true).find((s) => real.C_GetTokenInfo(s).label.trim() === testHsm().tokenLabel)!;
    real.C_CloseAllSessions(slot);
    const first = await send(app.port, `${P}/keys/k/encrypt`, enc, cred);
    expect(first.body).toMatchObject({ errorName: 'InternalException' });
    const later = await until(() => send(app.port, `${P}/keys/k/encrypt`, enc, cred), (r) => r.status === 200);
    expect(later.status).toBe(200);
  });

  it('the token disappears and comes back: UNAVAILABLE, then ACTIVE, without restart', async () => {
    faults.fail = { C_Encrypt: 'CKR_DEVICE_REMOVED', C_GetSlotList: 'CKR_TOKEN_NOT_PRESENT' };
    await send(app.port, `${P}/keys/k/encrypt`, enc, cred);
    const down = await until(() => send(app.port, `${P}/health`, health, cred), (r) => r.status === 500);
    expect(down.body).toMatchObject({ errorName: 'InternalException' });
    faults.fail = {};
    const up = await until(() => send(app.port, `${P}/health`, health, cred), (r) => r.status === 200);
    expect(up.body.ekmFleetDetails).toEqual([expect.objectContaining({ healthStatus: 'ACTIVE' })]);
  });

  it('a slow HSM: every request answered within its deadline, the queue bounded by ThrottlingException', async () => {
    faults.delayMs = 300; // real time: the HSM's latency against the proxy's real deadline timers, over real sockets
    const started = Date.now();
    const pending = Promise.all(Array.from({ length: 12 }, () => send(app.port, `${P}/keys/k/encrypt`, enc, cred)));
    // While every session is stuck in the HSM, the load balancer and Kubernetes probes still answer at once.
    expect(await until(() => app.engine.poolStats().inUse, (n) => n === 2, 250, 5)).toBe(2);
    const probes = await Promise.all([get(app.port, '/healthz'), get(app.opsPort as number, '/livez'), get(app.opsPort as number, '/readyz')]);
    const results = await pending;
    const elapsed = Date.now() - started;
    for (const p of probes) {
      expect([200, 503]).toContain(p.status);
      expect(p.ms).toBeLessThan(100);
    }
    const names = results.map((r) => r.body.errorName);
    expect(elapsed).toBeLessThan(250);
    expect(names.every((n) => n === 'DependencyTimeoutException' || n === 'ThrottlingException')).toBe(true);
    expect(names).toContain('ThrottlingException'); // 2 sessions + 4 waiting; the rest is turned away at once
    expect(names).toContain('DependencyTimeoutException');
  });

  it('a somewhat slow HSM reports DEGRADED and keeps serving', async () => {
    faults.delayMs = 30; // the check (encrypt + decrypt) takes ~60 ms: above deadline/2, below the deadline
    await app.health.refresh();
    const r = await send(app.port, `${P}/health`, health, cred);
    expect(r.status).toBe(200);
    expect(r.body.ekmFleetDetails).toEqual([expect.objectContaining({ healthStatus: 'DEGRADED' })]);
    expect((await send(app.port, `${P}/keys/k/encrypt`, enc, cred)).status).toBe(200);
  });
});
