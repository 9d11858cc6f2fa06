import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProxyApp } from '../src/app';
import { buildRuntimeConfig } from '../src/config/load';
import { createLogger } from '../src/log';
import { faultyModule } from '../testbed/faulty-module';
import { testHsm } from './support/hsm';
import { b64, keyMetadata, keyStoreWithKeys, newCredential, send, testConfig } from './support/proxy';

/**
 * The request log (at its most verbose) and the audit log, after successes and every kind of failure,
 * hold the request metadata but never plaintext, secrets, the HSM PIN or a signature.
 */
describe('logs never carry plaintext or secrets', () => {
  const cred = newCredential();
  const wrong = newCredential();
  const dir = mkdtempSync(join(tmpdir(), 'xks-logs-'));
  const lines: string[] = [];
  const { faults, create } = faultyModule();
  let app: ProxyApp;
  const P = '/logs/kms/xks/v1/keys/k';
  const plaintext = randomBytes(32);
  const aad = randomBytes(40);
  const signatures: string[] = [];

  beforeAll(async () => {
    const config = testConfig([keyStoreWithKeys('logs', '/logs', [cred], [{ id: 'k', label: 'test-key-1' }])], { audit: { file: join(dir, 'audit.log') } });
    const logger = createLogger('trace', { write: (s: string) => void lines.push(s) });
    app = await ProxyApp.start({ runtime: buildRuntimeConfig(config), logger, createModule: create });
  });
  afterAll(async () => {
    await app.stop(1000);
    rmSync(dir, { recursive: true, force: true });
  });

  const capture = (h: Record<string, string | number | string[]>): void => {
    const m = /Signature=([0-9a-f]+)/.exec(String(h.Authorization ?? h.authorization));
    if (m) signatures.push(m[1] as string);
  };

  it('after successes, denials, bad signatures and HSM errors', async () => {
    const encrypt = { requestMetadata: keyMetadata('Encrypt', { kmsRequestId: 'log-probe-1' }), plaintext: b64(plaintext), additionalAuthenticatedData: b64(aad), encryptionAlgorithm: 'AES_GCM' };
    const e = await send(app.port, `${P}/encrypt`, encrypt, cred, { editHeaders: capture });
    expect(e.status).toBe(200);
    const sealed = e.body as Record<string, string>;
    const decrypt = (a: Buffer) => ({
      requestMetadata: keyMetadata('Decrypt'),
      encryptionAlgorithm: 'AES_GCM',
      additionalAuthenticatedData: b64(a),
      ciphertext: sealed.ciphertext,
      ciphertextMetadata: sealed.ciphertextMetadata,
      initializationVector: sealed.initializationVector,
      authenticationTag: sealed.authenticationTag,
    });
    expect((await send(app.port, `${P}/decrypt`, decrypt(aad), cred, { editHeaders: capture })).status).toBe(200);
    expect((await send(app.port, `${P}/decrypt`, decrypt(randomBytes(40)), cred)).body.errorName).toBe('InvalidCiphertextException');
    expect((await send(app.port, `${P}/encrypt`, encrypt, wrong, { editHeaders: capture })).body.errorName).toBe('AuthenticationFailedException');
    expect((await send(app.port, `${P}/encrypt`, encrypt, cred, { tamperBody: (b) => b.replace('Encrypt', 'Encryp7') })).body.errorName).toBe('AuthenticationFailedException');
    faults.fail = { C_Encrypt: 'CKR_DEVICE_ERROR' };
    expect((await send(app.port, `${P}/encrypt`, encrypt, cred)).body.errorName).toBe('InternalException');
    faults.fail = {};
    await app.stop(1000);

    const text = lines.join('') + readFileSync(join(dir, 'audit.log'), 'utf8');
    // Positive controls: the scan reads real request lines.
    expect(text).toContain('log-probe-1');
    expect(text).toContain('AuthenticationFailedException');
    expect(signatures.length).toBeGreaterThanOrEqual(3);

    const forbidden: [string, string][] = [
      ['plaintext (Base64)', b64(plaintext)],
      ['plaintext (hex)', plaintext.toString('hex')],
      ['AAD (Base64)', b64(aad)],
      ['secret access key', cred.secretAccessKey],
      ['other secret access key', wrong.secretAccessKey],
      ['HSM PIN', testHsm().pin],
      ...signatures.map((s, i): [string, string] => [`signature ${i}`, s]),
    ];
    for (const [what, value] of forbidden) expect({ what, found: text.includes(value) }).toEqual({ what, found: false });
  });
});
