import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { ProxyApp } from '../src/app';
import { buildRuntimeConfig } from '../src/config/load';
import { silentLogger } from '../src/log';
import { Metrics } from '../src/metrics';
import { faultyModule } from '../testbed/faulty-module';
import { makePki, Pki } from './support/pki';
import { until } from './support/promises';
import { get, keyMetadata, keyStoreWithKeys, newCredential, send, startProxy, testConfig } from './support/proxy';

const cred = newCredential();
const health = { requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' } };
const TEN_DAYS_AGO = new Date(Date.now() - 10 * 86_400_000).toISOString();
const stores = () => [
  keyStoreWithKeys('ops', '/ops', [cred], [{ id: 'k', label: 'test-key-1' }], {
    keyStore: { credentials: [{ accessKeyId: cred.accessKeyId, secretAccessKey: { value: cred.secretAccessKey }, createdAt: TEN_DAYS_AGO }] },
  }),
];

describe('TLS and mTLS', () => {
  let pki: Pki;
  let app: ProxyApp;
  const good = () => pki.client('cks.kms.us-east-1.amazonaws.com');

  beforeAll(async () => {
    pki = makePki();
    app = await startProxy(
      testConfig(stores(), {
        server: {
          insecurePlainHttp: false,
          tls: {
            certFile: pki.serverCert,
            keyFile: pki.serverKey,
            clientCaFile: pki.caCert,
            allowedClientSubjects: ['cks.kms.us-east-1.amazonaws.com'],
          },
        },
      }),
    );
  });
  afterAll(() => app.stop(1000));

  const tlsOpts = (client?: { cert: string; key: string }) => ({
    ca: readFileSync(pki.caCert),
    servername: 'localhost',
    ...(client ? { cert: readFileSync(client.cert), key: readFileSync(client.key) } : {}),
  });

  it('serves XKS over TLS to KMS\'s client certificate, with a spec cipher suite', async () => {
    const r = await send(app.port, '/ops/kms/xks/v1/health', health, cred, { tls: tlsOpts(good()) });
    expect(r.status).toBe(200);
    const c = good();
    const socket = tls.connect({ port: app.port, host: '127.0.0.1', maxVersion: 'TLSv1.2', ...tlsOpts(c) });
    await new Promise((res, rej) => socket.once('secureConnect', res).once('error', rej));
    expect(socket.getProtocol()).toBe('TLSv1.2');
    expect(['ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-RSA-AES256-GCM-SHA384']).toContain(socket.getCipher().name);
    socket.destroy();
  });

  function handshakeError(opts: tls.ConnectionOptions): Promise<string> {
    return new Promise((resolve) => {
      const s = tls.connect({ port: app.port, host: '127.0.0.1', ...opts });
      s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      // TLS 1.3 finishes the client side before the server checks the certificate: wait for the server's verdict.
      s.once('secureConnect', () => {
        s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
        s.once('data', () => resolve('accepted'));
        s.once('close', () => resolve('closed'));
      });
    });
  }

  it('refuses TLS 1.1 at the handshake', async () => {
    const code = await handshakeError({ ...tlsOpts(good()), minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' });
    expect(code).toMatch(/PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|NO_PROTOCOLS/);
  });

  it('refuses clients without a certificate, from another CA, or with another subject', async () => {
    expect(await handshakeError(tlsOpts())).not.toBe('accepted');
    expect(await handshakeError(tlsOpts(pki.client('cks.kms.us-east-1.amazonaws.com', 'other')))).not.toBe('accepted');
    expect(await handshakeError(tlsOpts(pki.client('evil.example.com')))).not.toBe('accepted');
    expect(await handshakeError(tlsOpts(good()))).toBe('accepted');
  });
});

describe('metrics, readiness and liveness', () => {
  let app: ProxyApp;
  const { faults, create } = faultyModule();

  beforeAll(async () => {
    app = await startProxy(testConfig(stores(), { hsm: { healthCacheMs: 500, reconnectBackoffMs: 50 } } as never), create);
  });
  afterAll(() => app.stop(1000));

  it('exposes request, latency, HSM, pool and health series with bounded labels', async () => {
    await send(app.port, '/ops/kms/xks/v1/keys/k/encrypt', { requestMetadata: keyMetadata('Encrypt'), plaintext: 'AA==', encryptionAlgorithm: 'AES_GCM' }, cred);
    await send(app.port, '/ops/kms/xks/v1/keys/nope/metadata', { requestMetadata: keyMetadata('DescribeKey') }, cred);
    const m = await get(app.opsPort!, '/metrics');
    expect(m.status).toBe(200);
    expect(m.text).toMatch(/xks_requests_total\{key_store="ops",operation="Encrypt",error_name="none",retryable="false"\} 1/);
    expect(m.text).toMatch(/xks_requests_total\{key_store="ops",operation="GetKeyMetadata",error_name="KeyNotFoundException",retryable="false"\} 1/);
    expect(m.text).toMatch(/xks_request_duration_seconds_bucket\{le="0.25",key_store="ops",operation="Encrypt"\} 1/);
    expect(m.text).toMatch(/xks_hsm_operation_duration_seconds_count\{operation="encrypt",hsm_id="[^"]+"\} [1-9]/);
    expect(m.text).toMatch(/xks_hsm_sessions\{state="idle",hsm_id="[^"]+"\} 4/);
    expect(m.text).toMatch(/xks_ekm_health_status\{state="ACTIVE"\} 1/);
    expect(m.text).toMatch(/nodejs_eventloop_lag_seconds/);
    expect(m.text).toMatch(/xks_sigv4_credential_age_days\{key_store="ops"\} (9\.9|10\.0)/);
    // Never a key id, principal or request id as a label value.
    expect(m.text).not.toMatch(/nope|Alice|arn:aws/);
  });

  it('liveness stays up; readiness follows the HSM: fails when the token goes away, recovers by itself', async () => {
    expect((await get(app.opsPort!, '/readyz')).status).toBe(200);
    // GET /healthz on the ops port answers as the XKS port's does.
    expect(await get(app.opsPort!, '/healthz')).toMatchObject({ status: 200, text: '{"status":"ok"}' });
    faults.fail = { C_Encrypt: 'CKR_DEVICE_REMOVED', C_GetTokenInfo: 'CKR_TOKEN_NOT_PRESENT', C_GetSlotList: 'CKR_TOKEN_NOT_PRESENT' };
    const r = await send(app.port, '/ops/kms/xks/v1/keys/k/encrypt', { requestMetadata: keyMetadata('Encrypt'), plaintext: 'AA==', encryptionAlgorithm: 'AES_GCM' }, cred);
    expect(r.body.errorName).toBe('InternalException');
    const readyz = async (): Promise<number> => (await get(app.opsPort!, '/readyz')).status;
    expect(await until(readyz, (st) => st === 503)).toBe(503);
    expect((await get(app.opsPort!, '/livez')).status).toBe(200);
    expect((await get(app.port, '/healthz')).status).toBe(503);
    expect(await get(app.opsPort!, '/healthz')).toMatchObject({ status: 503, text: '{"status":"unavailable"}' });
    faults.fail = {};
    expect(await until(readyz, (st) => st === 200)).toBe(200);
    expect((await get(app.opsPort!, '/healthz')).status).toBe(200);
    const again = await send(app.port, '/ops/kms/xks/v1/keys/k/encrypt', { requestMetadata: keyMetadata('Encrypt'), plaintext: 'AA==', encryptionAlgorithm: 'AES_GCM' }, cred);
    expect(again.status).toBe(200);
  });

  it('a Metrics handed to an app stops following its bus when the app stops', async () => {
    const metrics = new Metrics(false);
    const other = await ProxyApp.start({ runtime: buildRuntimeConfig(testConfig(stores())), logger: silentLogger, metrics, opsServer: false });
    const breakerOfX = async (): Promise<string | undefined> => /xks_hsm_breaker_open\{hsm_id="x"\} (\d)/.exec(await metrics.registry.getSingleMetricAsString('xks_hsm_breaker_open'))?.[1];
    other.events.publish('hsm.breaker', { hsm: 'x', open: true });
    expect(await breakerOfX()).toBe('1');
    await other.stop(1000);
    other.events.publish('hsm.breaker', { hsm: 'x', open: false });
    expect(await breakerOfX()).toBe('1');
  });
});
