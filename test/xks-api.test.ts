import { expect } from '@jest/globals';
import { createDecipheriv } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProxyApp } from '../src/app';
import { buildRuntimeConfig } from '../src/config/load';
import { createLogger } from '../src/log';
import { cdiv, hsmAad } from '../src/xks/ciphertext-format';
import { testHsm } from './support/hsm';
import { b64, keyMetadata, keyStoreWithKeys, newCredential, send, startProxy, testConfig } from './support/proxy';

const A = '/tenant-a/kms/xks/v1';
const B = '/kms/xks/v1';
const c1 = newCredential();
const c2 = newCredential();
const cB = newCredential();

let app: ProxyApp;

beforeAll(async () => {
  app = await startProxy(
    testConfig([
      keyStoreWithKeys('tenant-a', '/tenant-a', [c1, c2], [
        { id: 'key-1', label: 'test-key-1' },
        { id: 'encrypt-only', label: 'test-key-2', usage: ['ENCRYPT'] },
        { id: 'disabled', label: 'test-key-4', status: 'DISABLED' },
        { id: 'known', label: 'known-key' },
      ]),
      keyStoreWithKeys('root', '', [cB], [{ id: 'key-1', label: 'test-key-3' }]),
    ]),
  );
});

afterAll(() => app.stop(1000));

const encryptBody = (plaintext: Buffer, aad?: Buffer, extra: Record<string, unknown> = {}) => ({
  requestMetadata: keyMetadata('Encrypt'),
  plaintext: b64(plaintext),
  encryptionAlgorithm: 'AES_GCM',
  ...(aad ? { additionalAuthenticatedData: b64(aad) } : {}),
  ...extra,
});

type Sealed = { ciphertext: string; ciphertextMetadata: string; initializationVector: string; authenticationTag: string };

const decryptBody = (sealed: Sealed, aad?: Buffer, extra: Record<string, unknown> = {}) => ({
  requestMetadata: keyMetadata('Decrypt'),
  encryptionAlgorithm: 'AES_GCM',
  ciphertext: sealed.ciphertext,
  ciphertextMetadata: sealed.ciphertextMetadata,
  initializationVector: sealed.initializationVector,
  authenticationTag: sealed.authenticationTag,
  ...(aad ? { additionalAuthenticatedData: b64(aad) } : {}),
  ...extra,
});

async function encrypt(keyId: string, plaintext: Buffer, aad?: Buffer, extra?: Record<string, unknown>): Promise<Sealed> {
  const r = await send(app.port, `${A}/keys/${keyId}/encrypt`, encryptBody(plaintext, aad, extra), c1);
  expect(r.body).not.toHaveProperty('errorName');
  expect(r.status).toBe(200);
  return r.body as unknown as Sealed;
}

describe('GetHealthStatus', () => {
  it('reports a deep check of the HSM', async () => {
    const r = await send(app.port, `${A}/health`, { requestMetadata: { kmsRequestId: 'h1', kmsOperation: 'KmsHealthCheck' } }, c1);
    expect(r.status).toBe(200);
    expect(r.body).toEqual({
      xksProxyFleetSize: 1,
      xksProxyVendor: expect.any(String),
      xksProxyModel: expect.stringMatching(/xks-proxy/),
      ekmVendor: testHsm().ekm.vendor,
      ekmFleetDetails: [{ id: expect.stringContaining(`${testHsm().tokenLabel}/`), model: expect.stringContaining(testHsm().ekm.model), healthStatus: 'ACTIVE' }],
    });
    expect(r.headers['content-type']).toBe('application/json');
  });

  // Changed deliberately for issue 10 item 1 (this test asserted 200 before): the spec calls both
  // requestMetadata fields REQUIRED, and AWS's test client expects ValidationException without them.
  it('refuses a malformed health request with ValidationException', async () => {
    for (const body of ['{}', 'not json', { requestMetadata: {} }, { requestMetadata: { kmsRequestId: 5, kmsOperation: 'KmsHealthCheck' } }]) {
      expect(await send(app.port, `${A}/health`, body, c1)).toMatchObject({ status: 400, body: { errorName: 'ValidationException' } });
    }
  });

  it('accepts kmsOperation values it has never seen', async () => {
    const r = await send(app.port, `${A}/health`, { requestMetadata: { kmsRequestId: 'h2', kmsOperation: 'SomeFutureOperation', newField: 1 } }, c1);
    expect(r.status).toBe(200);
  });
});

describe('GetKeyMetadata', () => {
  it('reports AES_256, usages and status', async () => {
    const r = await send(app.port, `${A}/keys/key-1/metadata`, { requestMetadata: keyMetadata('DescribeKey') }, c1);
    expect(r).toMatchObject({ status: 200, body: { keySpec: 'AES_256', keyUsage: ['ENCRYPT', 'DECRYPT'], keyStatus: 'ENABLED' } });
  });

  it('reports DISABLED keys and limited usages, and needs no kmsKeyArn (CreateKey)', async () => {
    const md = keyMetadata('CreateKey');
    delete md.kmsKeyArn;
    expect((await send(app.port, `${A}/keys/disabled/metadata`, { requestMetadata: md }, c1)).body).toMatchObject({ keyStatus: 'DISABLED' });
    expect((await send(app.port, `${A}/keys/encrypt-only/metadata`, { requestMetadata: md }, c1)).body).toMatchObject({ keyUsage: ['ENCRYPT'] });
  });
});

describe('Encrypt and Decrypt', () => {
  it.each([0, 1, 32, 4300].flatMap((size) => [0, 8192].map((aad) => [size, aad])))(
    'round-trips %i bytes of plaintext with %i bytes of AAD',
    async (size, aadSize) => {
      const plaintext = randomBytes(size);
      const aad = aadSize ? randomBytes(aadSize) : undefined;
      const sealed = await encrypt('key-1', plaintext, aad);
      expect(Buffer.from(sealed.ciphertext, 'base64').length).toBe(size);
      expect(Buffer.from(sealed.initializationVector, 'base64').length).toBe(12);
      expect(Buffer.from(sealed.authenticationTag, 'base64').length).toBe(16);
      expect(Buffer.from(sealed.ciphertextMetadata, 'base64').length).toBeLessThanOrEqual(20);
      const r = await send(app.port, `${A}/keys/key-1/decrypt`, decryptBody(sealed, aad), c1);
      expect(r.status).toBe(200);
      expect(Buffer.from(r.body.plaintext as string, 'base64').equals(plaintext)).toBe(true);
    },
  );

  it('produces real AES-256-GCM over the spec AAD layout (checked with node:crypto and the known key)', async () => {
    const plaintext = Buffer.from('Hello World!');
    const aad = Buffer.from('project=nile,department=marketing');
    const sealed = await encrypt('known', plaintext, aad);
    const key = Buffer.from(testHsm().knownKeyHex, 'hex');
    const d = createDecipheriv('aes-256-gcm', key, Buffer.from(sealed.initializationVector, 'base64'));
    d.setAAD(hsmAad(aad, Buffer.from(sealed.ciphertextMetadata, 'base64')));
    d.setAuthTag(Buffer.from(sealed.authenticationTag, 'base64'));
    const opened = Buffer.concat([d.update(Buffer.from(sealed.ciphertext, 'base64')), d.final()]);
    expect(opened.toString()).toBe('Hello World!');
  });

  it('uses a fresh IV for every encryption', async () => {
    const ivs = new Set<string>();
    for (let i = 0; i < 20; i++) ivs.add((await encrypt('key-1', Buffer.from('x'))).initializationVector);
    expect(ivs.size).toBe(20);
  });

  it('returns a CDIV over exactly the returned fields when asked', async () => {
    const plaintext = randomBytes(32);
    const aad = randomBytes(40);
    const r = await send(app.port, `${A}/keys/key-1/encrypt`, encryptBody(plaintext, aad, { ciphertextDataIntegrityValueAlgorithm: 'SHA_256' }), c1);
    expect(r.status).toBe(200);
    const f = (k: string) => Buffer.from(r.body[k] as string, 'base64');
    const expected = cdiv({ aad, metadata: f('ciphertextMetadata'), iv: f('initializationVector'), ciphertext: f('ciphertext'), tag: f('authenticationTag') });
    expect(r.body.ciphertextDataIntegrityValue).toBe(expected.toString('base64'));
  });

  it('omits the CDIV when not asked', async () => {
    const r = await send(app.port, `${A}/keys/key-1/encrypt`, encryptBody(Buffer.from('x')), c1);
    expect(r.body).not.toHaveProperty('ciphertextDataIntegrityValue');
  });

  it('decrypts a 16-byte IV made elsewhere with the same key (known key, node:crypto)', async () => {
    const { createCipheriv } = await import('node:crypto');
    const key = Buffer.from(testHsm().knownKeyHex, 'hex');
    const iv = randomBytes(16);
    const aad = Buffer.from('ctx');
    const c = createCipheriv('aes-256-gcm', key, iv);
    c.setAAD(hsmAad(aad, undefined));
    const ct = Buffer.concat([c.update('sixteen-byte iv!'), c.final()]);
    const sealed = { ciphertext: b64(ct), initializationVector: b64(iv), authenticationTag: b64(c.getAuthTag()) } as Sealed;
    const body = decryptBody(sealed, aad);
    delete (body as Record<string, unknown>).ciphertextMetadata;
    const r = await send(app.port, `${A}/keys/known/decrypt`, body, c1);
    expect(r.status).toBe(200);
    expect(Buffer.from(r.body.plaintext as string, 'base64').toString()).toBe('sixteen-byte iv!');
  });

  describe('rejects tampering with InvalidCiphertextException', () => {
    const flip = (v: string, at = 0) => {
      const b = Buffer.from(v, 'base64');
      b[at] = (b[at] as number) ^ 0x01;
      return b64(b);
    };
    let sealed: Sealed;
    const aad = Buffer.from('context');
    beforeAll(async () => {
      sealed = await encrypt('key-1', Buffer.from('a data key of 32 bytes, exactly!'), aad);
    });

    it.each([
      ['ciphertext', (s: Sealed) => ({ ...s, ciphertext: flip(s.ciphertext) }), aad],
      ['tag', (s: Sealed) => ({ ...s, authenticationTag: flip(s.authenticationTag, 15) }), aad],
      ['IV', (s: Sealed) => ({ ...s, initializationVector: flip(s.initializationVector) }), aad],
      ['AAD', (s: Sealed) => s, Buffer.from('contexT')],
      ['missing AAD', (s: Sealed) => s, undefined],
      ['ciphertextMetadata (format byte)', (s: Sealed) => ({ ...s, ciphertextMetadata: flip(s.ciphertextMetadata, 0) }), aad],
      ['ciphertextMetadata (key version)', (s: Sealed) => ({ ...s, ciphertextMetadata: flip(s.ciphertextMetadata, 4) }), aad],
    ])('%s', async (_what, edit, useAad) => {
      const r = await send(app.port, `${A}/keys/key-1/decrypt`, decryptBody(edit(sealed), useAad), c1);
      expect(r).toMatchObject({ status: 400, body: { errorName: 'InvalidCiphertextException' } });
    });

    it('metadata moved into the AAD field', async () => {
      const body = decryptBody(sealed, undefined, { additionalAuthenticatedData: sealed.ciphertextMetadata });
      delete (body as Record<string, unknown>).ciphertextMetadata;
      const r = await send(app.port, `${A}/keys/key-1/decrypt`, body, c1);
      expect(r.body.errorName).toBe('InvalidCiphertextException');
    });

    it('a ciphertext decrypted under another key', async () => {
      const r = await send(app.port, `${A}/keys/known/decrypt`, decryptBody(sealed, aad), c1);
      expect(r.body.errorName).toBe('InvalidCiphertextException');
    });
  });
});

describe('SigV4 per key store', () => {
  const health = { requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' } };

  it('accepts the second credential of a key store (rotation)', async () => {
    expect((await send(app.port, `${A}/health`, health, c2)).status).toBe(200);
  });

  it('rejects a credential of one key store on another', async () => {
    expect(await send(app.port, `${B}/health`, health, c1)).toMatchObject({ status: 401, body: { errorName: 'AuthenticationFailedException' } });
    expect(await send(app.port, `${A}/health`, health, cB)).toMatchObject({ status: 401, body: { errorName: 'AuthenticationFailedException' } });
    expect((await send(app.port, `${B}/health`, health, cB)).status).toBe(200);
  });

  it('serves each key store its own keys under the same externalKeyId', async () => {
    const sealed = await encrypt('key-1', Buffer.from('tenant a secret'));
    const r = await send(app.port, `${B}/keys/key-1/decrypt`, decryptBody(sealed), cB);
    expect(r.body.errorName).toBe('InvalidCiphertextException');
  });

  it('rejects unsigned requests, and a valid signature over a different body', async () => {
    expect((await send(app.port, `${A}/health`, health, undefined)).status).toBe(401);
    const r = await send(app.port, `${A}/keys/key-1/metadata`, { requestMetadata: keyMetadata('DescribeKey') }, c1, {
      tamperBody: (b) => b.replace('DescribeKey', 'DescribeKex'),
    });
    expect(r).toMatchObject({ status: 401, body: { errorName: 'AuthenticationFailedException' } });
  });

  it('rejects a signature outside the five-minute window', async () => {
    const r = await send(app.port, `${A}/health`, health, c1, { date: new Date(Date.now() - 6 * 60_000) });
    expect(r.status).toBe(401);
  });
});

describe('inline HSM calls (hsm.asyncCalls: false)', () => {
  let inline: ProxyApp;
  const c = newCredential();
  beforeAll(async () => {
    inline = await startProxy(testConfig([keyStoreWithKeys('i', '/i', [c], [{ id: 'k', label: 'test-key-1' }])], { hsm: { asyncCalls: false } } as never));
  });
  afterAll(() => inline.stop(1000));

  it.each([0, 32])('round-trips %i bytes and rejects a forged tag', async (size) => {
    const pt = randomBytes(size);
    const e = await send(inline.port, '/i/kms/xks/v1/keys/k/encrypt', encryptBody(pt, Buffer.from('a')), c);
    expect(e.status).toBe(200);
    const sealed = e.body as unknown as Sealed;
    const d = await send(inline.port, '/i/kms/xks/v1/keys/k/decrypt', decryptBody(sealed, Buffer.from('a')), c);
    expect(Buffer.from(d.body.plaintext as string, 'base64').equals(pt)).toBe(true);
    const bad = await send(inline.port, '/i/kms/xks/v1/keys/k/decrypt', decryptBody({ ...sealed, authenticationTag: b64(randomBytes(16)) }, Buffer.from('a')), c);
    expect(bad.body.errorName).toBe('InvalidCiphertextException');
  });
});

describe('the request-path warm-up before the port opens (server.warmUpRequests)', () => {
  const lines: string[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'xks-warm-'));
  let warm: ProxyApp;
  beforeAll(async () => {
    const config = testConfig([keyStoreWithKeys('w', '/w', [c1], [{ id: 'key-1', label: 'test-key-1' }])], {
      server: { warmUpRequests: 64 },
      audit: { file: join(dir, 'audit.log') },
    });
    warm = await ProxyApp.start({ runtime: buildRuntimeConfig(config), logger: createLogger('info', { write: (s: string) => void lines.push(s) }) });
  });
  afterAll(async () => {
    await warm.stop(1000);
    rmSync(dir, { recursive: true, force: true });
  });
  const logged = (): Record<string, unknown>[] => lines.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);

  it('answers all four operations 200 through the real pipeline, and says so', () => {
    expect(logged().filter((l) => /warm-up: some requests failed/.test(String(l.msg)))).toEqual([]);
    const line = logged().find((l) => l.msg === 'request path warmed up') as { requests: number; answered: Record<'health' | 'metadata' | 'encrypt' | 'decrypt', number> };
    expect(line.requests).toBe(64);
    expect(line.answered).toEqual({ health: 16, metadata: 16, encrypt: expect.any(Number), decrypt: expect.any(Number) });
    expect(line.answered.encrypt + line.answered.decrypt).toBe(32);
    expect(line.answered.decrypt).toBeGreaterThan(0);
  });

  it('leaves nothing a customer or an auditor sees: no audit line, no request metric, no request log line', async () => {
    expect(readFileSync(join(dir, 'audit.log'), 'utf8')).not.toMatch(/"event":"key-operation"/);
    // The series of configured key stores exist at 0 from start (src/metrics.ts): none may have counted.
    expect((await warm.metrics.requests.get()).values.filter((v) => v.value !== 0)).toEqual([]);
    expect(logged().filter((l) => l.msg === 'xks request')).toEqual([]);
    // No HSM call either (engine.warmUp did those): no key is looked up by a label the HSM might lack.
    const hsmCalls = (await warm.metrics.registry.getSingleMetricAsString('xks_hsm_operation_duration_seconds')).split('\n');
    expect(hsmCalls.filter((l) => l.startsWith('xks_hsm_operation_duration_seconds_count') && /operation="(encrypt|decrypt|check)"/.test(l) && !/ 0$/.test(l))).toEqual([]);
  });

  it('is not reachable: its key store exists only inside the warm-up', async () => {
    const r = await send(warm.port, '/xks-proxy-warm-up/kms/xks/v1/health', { requestMetadata: { kmsRequestId: 'x', kmsOperation: 'KmsHealthCheck' } }, c1);
    expect(r).toMatchObject({ status: 404, body: { errorName: 'InvalidUriPathException' } });
    expect((await send(warm.port, '/w/kms/xks/v1/keys/key-1/metadata', { requestMetadata: keyMetadata('DescribeKey') }, c1)).status).toBe(200);
  });
});
