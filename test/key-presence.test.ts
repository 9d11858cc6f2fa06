import { expect } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import * as pkcs11js from 'pkcs11js';
import type { ProxyApp } from '../src/app';
import { destroyKeys, generateKek, TokenSession } from '../src/engine/token';
import { faultyModule } from '../testbed/faulty-module';
import { testHsm } from './support/hsm';
import { keyMetadata, keyStoreWithKeys, newCredential, send, startProxy, testConfig, XksResponse } from './support/proxy';
import { until } from './support/promises';

/**
 * Issue 10 item 5: GetKeyMetadata reflects the HSM, not only the config. A key version whose object is
 * gone from the token is KeyNotFoundException (the spec's "external key is not found"; KMS tells the
 * customer the key "was not found in its external key manager"), and an HSM that cannot be reached is
 * InternalException ("failure of the backing key manager", retryable), never ENABLED. Real SoftHSM2 token;
 * objects are created and destroyed through the same loaded module, with faults injected at its boundary.
 */
const cred = newCredential();
const P = '/kp/kms/xks/v1';
const suffix = randomBytes(3).toString('hex'); // HSM labels are global to the shared token
const GONE = `gone-${suffix}`;
const OLD = `old-${suffix}`;

let app: ProxyApp;
const { faults, create } = faultyModule();

/**
 * A read-write session on the proxy's own module, already initialised and logged in (the login is shared).
 * Opened per use: a reconnect of the proxy closes every session on the slot.
 */
function onToken<T>(fn: (t: TokenSession) => T): T {
  const real = faults.real as pkcs11js.PKCS11;
  const slot = real.C_GetSlotList(true).find((s) => real.C_GetTokenInfo(s).label.trim() === testHsm().tokenLabel) as pkcs11js.Handle;
  const session = real.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  try {
    return fn({ mod: real, session, close: () => undefined });
  } finally {
    real.C_CloseSession(session);
  }
}

const metadata = (keyId: string): Promise<XksResponse> => send(app.port, `${P}/keys/${keyId}/metadata`, { requestMetadata: keyMetadata('DescribeKey') }, cred);
const encrypt = (keyId: string): Promise<XksResponse> =>
  send(app.port, `${P}/keys/${keyId}/encrypt`, { requestMetadata: keyMetadata('Encrypt'), plaintext: 'AAAA', encryptionAlgorithm: 'AES_GCM' }, cred);
const ENABLED = { status: 200, body: { keySpec: 'AES_256', keyUsage: ['ENCRYPT', 'DECRYPT'], keyStatus: 'ENABLED' } };

beforeAll(async () => {
  app = await startProxy(
    testConfig(
      [
        keyStoreWithKeys('kp', '/kp', [cred], [
          { id: 'present', label: 'test-key-1' },
          { id: 'never-there', label: `absent-${suffix}` },
          { id: 'deleted', label: GONE },
          { id: 'rotated', versions: [{ version: 1, label: OLD }, { version: 2, label: 'test-key-1-v2' }] },
        ]),
      ],
      // keyCheckCacheMs 0: every GetKeyMetadata asks the HSM, so a deletion shows at once.
      { hsm: { reconnectBackoffMs: 20, healthCacheMs: 200, keyCheckCacheMs: 0 } } as never,
    ),
    create,
  );
  onToken((t) => [GONE, OLD].forEach((label) => generateKek(t, label)));
});

afterAll(async () => {
  try {
    onToken((t) => [GONE, OLD].forEach((label) => destroyKeys(t, label)));
  } finally {
    await app.stop(1000);
  }
});

describe('GetKeyMetadata checks the key material in the HSM', () => {
  it('a key whose object is on the token is ENABLED', async () => {
    expect(await metadata('present')).toMatchObject(ENABLED);
  });

  it('a configured label with no object on the token: KeyNotFoundException', async () => {
    expect(await metadata('never-there')).toMatchObject({ status: 404, body: { errorName: 'KeyNotFoundException' } });
  });

  it('an object deleted after its handle was cached: KeyNotFoundException, for encrypt too', async () => {
    expect(await metadata('deleted')).toMatchObject(ENABLED);
    expect((await encrypt('deleted')).status).toBe(200);
    const lookups = faults.calls.C_GetAttributeValue ?? 0;
    expect(await metadata('deleted')).toMatchObject(ENABLED);
    // With the handle cached, the check is one attribute read and no search.
    expect((faults.calls.C_GetAttributeValue ?? 0) - lookups).toBe(1);

    expect(onToken((t) => destroyKeys(t, GONE))).toBe(1);
    const r = await metadata('deleted');
    expect(r).toMatchObject({ status: 404, body: { errorName: 'KeyNotFoundException', errorMessage: expect.stringContaining('version 1 of external key deleted') } });
    expect(await encrypt('deleted')).toMatchObject({ status: 404, body: { errorName: 'KeyNotFoundException' } });
  });

  it('an older version of a rotated key gone from the token: KeyNotFoundException naming that version', async () => {
    expect(await metadata('rotated')).toMatchObject(ENABLED);
    expect(onToken((t) => destroyKeys(t, OLD))).toBe(1);
    expect(await metadata('rotated')).toMatchObject({ status: 404, body: { errorName: 'KeyNotFoundException', errorMessage: expect.stringContaining('version 1') } });
    // The current version is still there: new encrypts work, only the metadata tells the operator.
    expect((await encrypt('rotated')).status).toBe(200);
  });

  it('an HSM that cannot be reached: InternalException (retryable), then ENABLED again once it is back', async () => {
    expect(await metadata('present')).toMatchObject(ENABLED);
    faults.fail = { C_GetAttributeValue: 'CKR_DEVICE_REMOVED', C_GetSlotList: 'CKR_TOKEN_NOT_PRESENT' };
    try {
      const lost = await metadata('present');
      expect(lost).toMatchObject({ status: 500, body: { errorName: 'InternalException' } });
      // While it reconnects (and cannot), the answer stays an error, never the configured status.
      const attempts = faults.calls.C_GetSlotList ?? 0;
      expect(await until(() => faults.calls.C_GetSlotList ?? 0, (n) => n > attempts)).toBeGreaterThan(attempts);
      expect(await metadata('present')).toMatchObject({ status: 500, body: { errorName: 'InternalException', errorMessage: expect.stringMatching(/HSM/) } });
    } finally {
      faults.fail = {};
    }
    expect(await until(() => metadata('present'), (r) => r.status === 200)).toMatchObject(ENABLED);
  });
});
