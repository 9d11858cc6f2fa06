import fc from 'fast-check';
import type { ProxyApp } from '../src/app';
import { XKS_ERROR_STATUS } from '../src/errors';
import { b64, keyMetadata, keyStoreWithKeys, newCredential, send, startProxy, testConfig, XksResponse } from './support/proxy';

/**
 * Hostile input, generated: whatever arrives, the answer is a spec error with a clean message (or a
 * success), never a 500, a stack trace, a secret or a plaintext, and the process keeps serving.
 */
const cred = newCredential();
const P = '/f/kms/xks/v1';
const SECRET_PLAINTEXT = b64('top secret data key material....');
let app: ProxyApp;

beforeAll(async () => {
  app = await startProxy(testConfig([keyStoreWithKeys('f', '/f', [cred], [{ id: 'k', label: 'test-key-1' }])]));
});
afterAll(() => app.stop(1000));

function expectClean(r: XksResponse): void {
  const text = JSON.stringify(r.body);
  expect(text).not.toContain(cred.secretAccessKey);
  expect(text).not.toContain(SECRET_PLAINTEXT);
  expect(text).not.toMatch(/\.(ts|js):\d+|Error:/);
  if (r.status === 200) return;
  expect(r.body.errorName).not.toBe("InternalException");
  expect(Object.keys(XKS_ERROR_STATUS)).toContain(r.body.errorName);
  expect(XKS_ERROR_STATUS[r.body.errorName as keyof typeof XKS_ERROR_STATUS]).toBe(r.status);
  expect(r.body.errorMessage).toMatch(/^[\x20-\x7e]{0,511}$/);
}

const anyJson = fc.jsonValue({ maxDepth: 4 });
const fieldValue = fc.oneof(anyJson, fc.string(), fc.base64String(), fc.constant(null), fc.integer(), fc.string({ unit: 'grapheme', maxLength: 50 }));

const encryptLike = fc.record(
  {
    requestMetadata: fc.oneof(
      fc.constant(keyMetadata('Encrypt')),
      fc.dictionary(fc.constantFrom('awsPrincipalArn', 'kmsKeyArn', 'kmsOperation', 'kmsRequestId', 'kmsViaService', 'extra'), fieldValue),
      anyJson,
    ),
    plaintext: fc.oneof(fc.constant(SECRET_PLAINTEXT), fieldValue),
    encryptionAlgorithm: fc.oneof(fc.constant('AES_GCM'), fieldValue),
    additionalAuthenticatedData: fieldValue,
    ciphertext: fieldValue,
    ciphertextMetadata: fieldValue,
    initializationVector: fc.oneof(fc.base64String({ minLength: 16, maxLength: 16 }), fieldValue),
    authenticationTag: fc.oneof(fc.base64String({ minLength: 24, maxLength: 24 }), fieldValue),
    ciphertextDataIntegrityValueAlgorithm: fc.oneof(fc.constant('SHA_256'), fieldValue),
  },
  { requiredKeys: [] },
);

describe('generated request bodies', () => {
  it.each(['encrypt', 'decrypt', 'metadata'])('%s: always a clean spec answer', async (op) => {
    await fc.assert(
      fc.asyncProperty(encryptLike, async (body) => {
        expectClean(await send(app.port, `${P}/keys/k/${op}`, body, cred));
      }),
      { numRuns: 150 },
    );
  });

  it('raw bytes and broken JSON', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.jsonValue().map((v) => JSON.stringify(v).slice(0, -1))), async (raw) => {
        expectClean(await send(app.port, `${P}/keys/k/encrypt`, raw, cred));
      }),
      { numRuns: 150 },
    );
  });

  it('deeply nested and oversized documents', async () => {
    const deep = '['.repeat(30_000) + ']'.repeat(30_000);
    expectClean(await send(app.port, `${P}/keys/k/encrypt`, deep, cred));
    const wide = JSON.stringify({ requestMetadata: keyMetadata('Encrypt'), plaintext: 'A'.repeat(60_000), encryptionAlgorithm: 'AES_GCM' });
    expectClean(await send(app.port, `${P}/keys/k/encrypt`, wide, cred));
  });
});

describe('generated paths and headers', () => {
  it('paths: InvalidUriPath, 405 or auth errors, never a crash', async () => {
    const segment = fc.oneof(fc.constantFrom('kms', 'xks', 'v1', 'keys', 'k', 'health', 'encrypt', '..', '.', '%2e%2e', 'f', ''), fc.webSegment());
    await fc.assert(
      fc.asyncProperty(fc.array(segment, { maxLength: 8 }), async (parts) => {
        const path = '/' + parts.join('/');
        const r = await send(app.port, path, { requestMetadata: keyMetadata('Encrypt') }, cred);
        if (r.status !== 405) expectClean(r);
      }),
      { numRuns: 200 },
    );
  });

  it('any change to a signed header after signing is an authentication failure', async () => {
    const body = { requestMetadata: keyMetadata('DescribeKey') };
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('X-Amz-Date', 'Authorization', 'Host'), fc.string({ minLength: 1, maxLength: 40 }).filter((s) => /^[\x21-\x7e]+$/.test(s)), async (name, value) => {
        const r = await send(app.port, `${P}/keys/k/metadata`, body, cred, {
          editHeaders: (h) => {
            const key = Object.keys(h).find((k) => k.toLowerCase() === name.toLowerCase())!;
            h[key] = name === 'Authorization' ? `${String(h[key]).slice(0, -4)}${value.slice(0, 4)}` : value;
          },
        });
        if (r.status === 200) return; // the edit happened to reproduce the original value
        expect(r.status).toBe(name === 'Host' && r.status === 404 ? 404 : 401);
        expectClean(r);
      }),
      { numRuns: 100 },
    );
  });

  it('still serves after all of it', async () => {
    const r = await send(app.port, `${P}/health`, { requestMetadata: { kmsRequestId: 'after', kmsOperation: 'KmsHealthCheck' } }, cred);
    expect(r.status).toBe(200);
  });
});
