import { randomBytes } from 'node:crypto';
import type { ProxyApp } from '../src/app';
import { XKS_ERROR_STATUS, XksErrorName } from '../src/errors';
import { faultyModule } from '../testbed/faulty-module';
import { b64, get, keyMetadata, keyStoreWithKeys, newCredential, send, startProxy, testConfig, XksResponse } from './support/proxy';

const P = '/t/kms/xks/v1';
const cred = newCredential();
const other = newCredential();
const third = newCredential();
let app: ProxyApp;
const reached = new Set<XksErrorName>();

function expectError(r: XksResponse, name: XksErrorName, message?: RegExp): void {
  expect(r.body.errorName).toBe(name);
  expect(r.status).toBe(XKS_ERROR_STATUS[name]);
  const msg = r.body.errorMessage as string;
  expect(msg).toMatch(/^[\x20-\x7e]{1,511}$/);
  if (message) expect(msg).toMatch(message);
  expect(JSON.stringify(r.body)).not.toMatch(/at .*\.(ts|js):\d+/); // no stack traces
  reached.add(name);
}

const health = { requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' } };
const enc = (plaintext: Buffer | string, extra: Record<string, unknown> = {}) => ({
  requestMetadata: keyMetadata('Encrypt'),
  plaintext: typeof plaintext === 'string' ? plaintext : b64(plaintext),
  encryptionAlgorithm: 'AES_GCM',
  ...extra,
});
const dec = (extra: Record<string, unknown> = {}) => ({
  requestMetadata: keyMetadata('Decrypt'),
  ciphertext: b64('abc'),
  initializationVector: b64(randomBytes(12)),
  authenticationTag: b64(randomBytes(16)),
  encryptionAlgorithm: 'AES_GCM',
  ...extra,
});

beforeAll(async () => {
  app = await startProxy(
    testConfig([
      keyStoreWithKeys('t', '/t', [cred], [
        { id: 'k', label: 'test-key-1' },
        { id: 'enc-only', label: 'test-key-2', usage: ['ENCRYPT'] },
        { id: 'off', label: 'test-key-3', status: 'DISABLED' },
        { id: 'no-material', label: 'no-such-label' },
        { id: 'extractable', label: 'extractable-key' },
      ], {
        policy: { rules: [{ id: 'deny-mallory', effect: 'deny', principals: ['arn:aws:iam::*:user/Mallory'] }, { id: 'allow', effect: 'allow' }] },
      }),
      keyStoreWithKeys('slow', '/quota', [other], [], { keyStore: { requestsPerSecond: 1 } }),
      keyStoreWithKeys('closed', '/closed', [third], [], { keyStore: { status: 'DISABLED' } }),
    ]),
  );
});

afterAll(async () => {
  await app.stop(1000);
});

describe('ValidationException', () => {
  it.each([
    ['invalid JSON', '{"requestMetadata":', /not valid JSON/],
    ['a JSON array', '[]', /JSON object/],
    ['no requestMetadata', { plaintext: 'AA==' }, /requestMetadata is required/],
    ['no kmsRequestId', enc('AA==', { requestMetadata: { ...keyMetadata('Encrypt'), kmsRequestId: undefined } }), /kmsRequestId is required/],
    ['no awsPrincipalArn', enc('AA==', { requestMetadata: { ...keyMetadata('Encrypt'), awsPrincipalArn: undefined } }), /awsPrincipalArn is required/],
    ['no kmsKeyArn', enc('AA==', { requestMetadata: { ...keyMetadata('Encrypt'), kmsKeyArn: undefined } }), /kmsKeyArn is required/],
    ['a number as kmsOperation', enc('AA==', { requestMetadata: { ...keyMetadata('Encrypt'), kmsOperation: 7 } }), /kmsOperation must be a string/],
    ['an ARN over 2048 characters', enc('AA==', { requestMetadata: keyMetadata('Encrypt', { awsPrincipalArn: 'a'.repeat(2049) }) }), /2048/],
    ['invalid Base64', enc('not base64!'), /plaintext is not valid standard Base64/],
    ['URL-safe Base64', enc('-_-_'), /Base64/],
    ['no plaintext', { requestMetadata: keyMetadata('Encrypt'), encryptionAlgorithm: 'AES_GCM' }, /plaintext is required/],
    ['another algorithm', enc('AA==', { encryptionAlgorithm: 'AES_CBC' }), /AES_GCM/],
    ['another CDIV algorithm', enc('AA==', { ciphertextDataIntegrityValueAlgorithm: 'MD5' }), /SHA_256/],
  ])('encrypt with %s', async (_n, body, msg) => {
    expectError(await send(app.port, `${P}/keys/k/encrypt`, body, cred), 'ValidationException', msg);
  });

  it.each([
    ['a 13-byte IV', dec({ initializationVector: b64(randomBytes(13)) }), /12 or 16 bytes/],
    ['a 15-byte tag', dec({ authenticationTag: b64(randomBytes(15)) }), /16 bytes/],
    ['21 bytes of ciphertextMetadata', dec({ ciphertextMetadata: b64(randomBytes(21)) }), /ciphertextMetadata exceeds 20 bytes/],
    ['no IV', dec({ initializationVector: undefined }), /initializationVector is required/],
  ])('decrypt with %s', async (_n, body, msg) => {
    expectError(await send(app.port, `${P}/keys/k/decrypt`, body, cred), 'ValidationException', msg);
  });

  it('an externalKeyId over 128 characters', async () => {
    expectError(await send(app.port, `${P}/keys/${'a'.repeat(129)}/metadata`, { requestMetadata: keyMetadata('DescribeKey') }, cred), 'ValidationException', /externalKeyId/);
  });
});

describe('every other error in the spec table, from a real request', () => {
  it('InvalidStateException for a disabled key and a disabled key store', async () => {
    expectError(await send(app.port, `${P}/keys/off/encrypt`, enc(Buffer.from('x')), cred), 'InvalidStateException', /disabled/);
    expectError(await send(app.port, '/closed/kms/xks/v1/health', health, third), 'InvalidStateException');
  });

  it('InvalidCiphertextException for a forged tag', async () => {
    expectError(await send(app.port, `${P}/keys/k/decrypt`, dec(), cred), 'InvalidCiphertextException');
  });

  it('InvalidKeyUsageException for decrypt with an encrypt-only key', async () => {
    expectError(await send(app.port, `${P}/keys/enc-only/decrypt`, dec(), cred), 'InvalidKeyUsageException', /DECRYPT/);
  });

  it('AuthenticationFailedException for a bad signature', async () => {
    expectError(await send(app.port, `${P}/health`, health, { ...cred, secretAccessKey: other.secretAccessKey }), 'AuthenticationFailedException');
  });

  it('AccessDeniedException names the rule that denied', async () => {
    const r = await send(app.port, `${P}/keys/k/encrypt`, enc(Buffer.from('x'), { requestMetadata: keyMetadata('Encrypt', { awsPrincipalArn: 'arn:aws:iam::123456789012:user/Mallory' }) }), cred);
    expectError(r, 'AccessDeniedException', /deny-mallory/);
  });

  it('KeyNotFoundException for an unknown key and for a key whose HSM material is missing', async () => {
    expectError(await send(app.port, `${P}/keys/nope/metadata`, { requestMetadata: keyMetadata('DescribeKey') }, cred), 'KeyNotFoundException');
    expectError(await send(app.port, `${P}/keys/no-material/encrypt`, enc(Buffer.from('x')), cred), 'KeyNotFoundException');
  });

  it.each([
    ['an unknown operation', `${P}/keys/k/sign`],
    ['another API version', '/t/kms/xks/v2/health'],
    ['an unknown path prefix', '/other/kms/xks/v1/health'],
    ['a traversal attempt', '/t/kms/xks/v1/keys/../health'],
    ['an encoded slash', `${P}/keys/a%2Fb/encrypt`],
    ['a query string', `${P}/health?x=1`],
  ])('InvalidUriPathException for %s', async (_n, path) => {
    expectError(await send(app.port, path, health, cred), 'InvalidUriPathException');
  });

  it('ThrottlingException past a key store quota', async () => {
    const results = [];
    for (let i = 0; i < 3; i++) results.push(await send(app.port, '/quota/kms/xks/v1/health', health, other));
    const throttled = results.find((r) => r.status === 429);
    expect(throttled).toBeDefined();
    expectError(throttled!, 'ThrottlingException');
  });

  it('InternalException (not a crash) for a key that could leave the HSM', async () => {
    expectError(await send(app.port, `${P}/keys/extractable/encrypt`, enc(Buffer.from('x')), cred), 'InternalException', /extractable/);
  });

  it('UnsupportedOperationException above the supported sizes', async () => {
    expectError(await send(app.port, `${P}/keys/k/encrypt`, enc(randomBytes(8193)), cred), 'UnsupportedOperationException', /plaintext/);
    expectError(await send(app.port, `${P}/keys/k/encrypt`, enc(Buffer.from('x'), { pad: 'x'.repeat(70_000) }), cred), 'UnsupportedOperationException', /body/);
  });

  it('405 for GET on an XKS URI', async () => {
    expect((await get(app.port, `${P}/health`)).status).toBe(405);
  });
});

describe('DependencyTimeoutException with a slow HSM', () => {
  let slow: ProxyApp;
  const { faults, create } = faultyModule();

  beforeAll(async () => {
    slow = await startProxy(
      testConfig([keyStoreWithKeys('t', '/t', [cred], [{ id: 'k', label: 'test-key-1' }])], { limits: { deadlineMs: 100 }, hsm: { healthCacheMs: 59_000 } } as never),
      create,
    );
  });

  afterAll(async () => {
    faults.delayMs = 0;
    await slow.stop(1000);
  });

  it('answers 503 inside the deadline while the HSM takes 300 ms, and health stays responsive', async () => {
    faults.delayMs = 300;
    const started = Date.now();
    const r = await send(slow.port, `${P}/keys/k/encrypt`, enc(Buffer.from('x')), cred);
    const elapsed = Date.now() - started;
    expectError(r, 'DependencyTimeoutException');
    expect(elapsed).toBeLessThan(250);
    expect(faults.calls.C_Encrypt).toBeGreaterThan(0);
  });

  it('keeps answering health checks promptly while the HSM is slow', async () => {
    faults.delayMs = 300;
    await slow.health.refresh(); // a deep check against the slow HSM: it times out
    const started = Date.now();
    const h = await send(slow.port, `${P}/health`, health, cred);
    expect(Date.now() - started).toBeLessThan(250);
    expectError(h, 'DependencyTimeoutException', /health check timed out/);
    expect((await get(slow.port, '/healthz')).status).toBe(503);
  });
});

afterAll(() => {
  // The spec's error table, every row reached by a real request above.
  expect([...reached].sort()).toEqual(Object.keys(XKS_ERROR_STATUS).sort());
});
