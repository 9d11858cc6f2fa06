import { expect } from '@jest/globals';
import { createDecipheriv, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as pkcs11js from 'pkcs11js';
import { ProxyApp } from '../src/app';
import { buildRuntimeConfig } from '../src/config/load';
import type { ProxyConfigInput } from '../src/config/schema';
import type { IvSource } from '../src/engine/gcm';
import { createLogger } from '../src/log';
import { faultyModule } from '../testbed/faulty-module';
import { hsmAad } from '../src/xks/ciphertext-format';
import { type EmuControls, type EmulatedProfile, vendorEmuModule, writeEmuControls } from '../testbed/hsm-setups';
import { hsmConfig, kindOf, openEngine } from './support/engine';
import { MODULE, testHsm } from './support/hsm';
import { b64, keyMetadata, keyStoreWithKeys, newCredential, send, startProxy, testConfig } from './support/proxy';

/**
 * Who chooses the AES-GCM IV, on SoftHSM2 behind the vendor-emulation module (testbed/vendor-emu.c).
 * Each profile's proxy learns the IV source at connect, encrypts through HTTP, and decrypts what every
 * profile before it sealed: one token and one key throughout, so the IV travels with the ciphertext
 * whoever chose it. The profiles take turns on the one loaded module (profile= in C_Initialize's pReserved).
 */
const h = testHsm();
const cred = newCredential();
const P = '/v/kms/xks/v1';
const health = { requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' } };
const dir = mkdtempSync(join(tmpdir(), 'xks-vendor-emu-'));
const controls = join(dir, 'controls');
const emu = vendorEmuModule();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Mode {
  name: string;
  profile?: EmulatedProfile;
  emu?: EmuControls;
  ivSource: IvSource;
  ivBytes: number;
}
const MODES: Mode[] = [
  { name: 'SoftHSM2', ivSource: 'proxy', ivBytes: 12 },
  { name: 'cloudhsm', profile: 'cloudhsm', ivSource: 'hsm-writes-zeroed', ivBytes: 12 },
  { name: 'nshield', profile: 'nshield', ivSource: 'hsm-writes-zeroed', ivBytes: 12 },
  { name: 'luna-fips (firmware 7.9.3: ulIvBits 96)', profile: 'luna-fips', ivSource: 'hsm-appends', ivBytes: 12 },
  { name: 'luna-fips (older firmware: 16-byte IVs)', profile: 'luna-fips', emu: { iv_bytes: 16 }, ivSource: 'hsm-appends', ivBytes: 16 },
];

/** The hsm section that reaches the test token through the emulation with this profile. */
function emulatedHsm(profile: EmulatedProfile, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    modulePath: emu,
    libraryParameters: `profile=${profile} control=${controls}`,
    pin: { value: profile === 'cloudhsm' ? `xks_cu:${h.pin}` : h.pin },
    ...over,
  };
}

function config(hsm: Record<string, unknown> = {}): ProxyConfigInput {
  return testConfig([keyStoreWithKeys('v', '/v', [cred], [{ id: 'k', label: 'known-key' }])], { hsm } as never);
}

type Sealed = { ciphertext: string; ciphertextMetadata: string; initializationVector: string; authenticationTag: string };
const decryptBody = (s: Sealed, aad: Buffer) => ({ requestMetadata: keyMetadata('Decrypt'), encryptionAlgorithm: 'AES_GCM', additionalAuthenticatedData: b64(aad), ...s });

describe('an encrypt under each IV source decrypts through the proxy', () => {
  const sealedSoFar: { by: string; plaintext: Buffer; aad: Buffer; sealed: Sealed }[] = [];

  it.each(MODES)('$name: learns $ivSource at connect, seals with a $ivBytes-byte IV, opens every earlier ciphertext', async (mode) => {
    writeEmuControls(controls, mode.emu ?? {});
    const lines: string[] = [];
    const logger = createLogger('info', { write: (s: string) => void lines.push(s) });
    const app = await ProxyApp.start({ runtime: buildRuntimeConfig(config(mode.profile ? emulatedHsm(mode.profile) : {})), logger });
    try {
      const connected = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'HSM connected');
      expect(connected).toMatchObject({ ivSource: mode.ivSource });
      if (mode.profile === 'nshield') expect(connected?.tagFailures).toContain('CKR_FUNCTION_FAILED');

      // The deep health check does its round trip in this mode too.
      const hs = await send(app.port, `${P}/health`, health, cred);
      expect(hs.body.ekmFleetDetails).toEqual([expect.objectContaining({ healthStatus: 'ACTIVE', model: expect.stringContaining(mode.profile ?? 'SoftHSM') })]);

      const plaintext = randomBytes(48);
      const aad = Buffer.from(`sealed by ${mode.name}`);
      const e = await send(app.port, `${P}/keys/k/encrypt`, { requestMetadata: keyMetadata('Encrypt'), plaintext: b64(plaintext), additionalAuthenticatedData: b64(aad), encryptionAlgorithm: 'AES_GCM' }, cred);
      expect(e.status).toBe(200);
      const sealed = e.body as unknown as Sealed;
      const iv = Buffer.from(sealed.initializationVector, 'base64');
      expect(iv.length).toBe(mode.ivBytes);
      expect(iv.equals(Buffer.alloc(mode.ivBytes))).toBe(false);
      // The IV returned is the one the ciphertext was made with (node:crypto, the known key's value).
      const d = createDecipheriv('aes-256-gcm', Buffer.from(h.knownKeyHex, 'hex'), iv);
      d.setAAD(hsmAad(aad, Buffer.from(sealed.ciphertextMetadata, 'base64')));
      d.setAuthTag(Buffer.from(sealed.authenticationTag, 'base64'));
      expect(Buffer.concat([d.update(Buffer.from(sealed.ciphertext, 'base64')), d.final()]).equals(plaintext)).toBe(true);

      sealedSoFar.push({ by: mode.name, plaintext, aad, sealed });
      for (const earlier of sealedSoFar) {
        const r = await send(app.port, `${P}/keys/k/decrypt`, decryptBody(earlier.sealed, earlier.aad), cred);
        expect({ by: earlier.by, status: r.status, plaintext: r.body.plaintext }).toEqual({ by: earlier.by, status: 200, plaintext: b64(earlier.plaintext) });
      }
      // A forged tag is InvalidCiphertextException in every mode (nShield reports it as CKR_FUNCTION_FAILED).
      const forged = { ...sealed, authenticationTag: b64(randomBytes(16)) };
      expect((await send(app.port, `${P}/keys/k/decrypt`, decryptBody(forged, aad), cred)).body.errorName).toBe('InvalidCiphertextException');
    } finally {
      await app.stop(1000);
    }
  });
});

describe('what the emulated HSMs refuse, and how the proxy says so', () => {
  beforeAll(() => writeEmuControls(controls, {}));

  it('hsm.ivSource proxy on CloudHSM: misconfigured, naming the setting, the call and its return value', async () => {
    const app = await startProxy(config(emulatedHsm('cloudhsm', { ivSource: 'proxy' })));
    try {
      expect(app.engine.status()).toEqual({
        state: 'misconfigured',
        reason: 'AES-GCM probe: hsm.ivSource proxy (a random IV passed in CK_GCM_PARAMS): C_EncryptInit returned CKR_MECHANISM_PARAM_INVALID',
      });
    } finally {
      await app.stop(100);
    }
  });

  it('hsm.ivSource hsm-appends on Luna in FIPS mode connects and serves', async () => {
    const app = await startProxy(config(emulatedHsm('luna-fips', { ivSource: 'hsm-appends' })));
    try {
      expect(app.engine.status()).toEqual({ state: 'connected' });
      const e = await send(app.port, `${P}/keys/k/encrypt`, { requestMetadata: keyMetadata('Encrypt'), plaintext: b64('x'), encryptionAlgorithm: 'AES_GCM' }, cred);
      expect(e.status).toBe(200);
    } finally {
      await app.stop(100);
    }
  });

  it('a CloudHSM PIN without the crypto user name is C_Login returned CKR_PIN_INCORRECT', async () => {
    const app = await startProxy(config(emulatedHsm('cloudhsm', { pin: { value: h.pin } })));
    try {
      expect(app.engine.status()).toEqual({ state: 'misconfigured', reason: 'C_Login returned CKR_PIN_INCORRECT' });
    } finally {
      await app.stop(100);
    }
  });
});

describe('engine', () => {
  const EMPTY = Buffer.alloc(0);
  const softhsm = () => hsmConfig({ modulePath: MODULE, tokenLabel: h.tokenLabel, environment: h.environment });

  it('a module refusing every IV source is a misconfiguration naming each refusal', async () => {
    const { faults, create } = faultyModule();
    faults.inspect = (method, args) => (method === 'C_EncryptInit' && (args[1] as pkcs11js.Mechanism).mechanism === pkcs11js.CKM_AES_GCM ? 'CKR_MECHANISM_PARAM_INVALID' : undefined);
    const { engine } = await openEngine(softhsm(), h.pin, { createModule: create });
    try {
      expect(engine.status()).toEqual({
        state: 'misconfigured',
        reason:
          'AES-GCM probe: the HSM refused every IV source: proxy (a random IV passed in CK_GCM_PARAMS): C_EncryptInit returned CKR_MECHANISM_PARAM_INVALID; ' +
          'hsm-writes-zeroed (a zeroed 12-byte pIv for the HSM to fill): C_EncryptInit returned CKR_MECHANISM_PARAM_INVALID; ' +
          'hsm-appends (ulIvLen 0, ulIvBits 96, the IV after the tag): C_EncryptInit returned CKR_MECHANISM_PARAM_INVALID',
      });
    } finally {
      await engine.close();
    }
  });

  it('a session the HSM invalidated (an HA group losing a member) is replaced and the operation retried', async () => {
    const { faults, create } = faultyModule();
    const { engine } = await openEngine(softhsm(), h.pin, { createModule: create });
    try {
      let invalidate = 2;
      faults.inspect = (method) => (method === 'C_EncryptInit' && invalidate-- > 0 ? 'CKR_SESSION_HANDLE_INVALID' : undefined);
      const opened = faults.calls.C_OpenSession ?? 0;
      const sealed = await engine.encrypt('test-key-1', Buffer.from('still served'), EMPTY);
      expect((await engine.decrypt('test-key-1', sealed.iv, EMPTY, sealed.ciphertext, sealed.tag)).toString()).toBe('still served');
      expect((faults.calls.C_OpenSession ?? 0) - opened).toBe(2);
      expect(engine.status()).toEqual({ state: 'connected' });
      expect(engine.poolStats().size).toBe(2);
      // A session the HSM keeps invalidating fails the request after a few tries, and the engine stays up.
      faults.inspect = (method) => (method === 'C_EncryptInit' ? 'CKR_SESSION_HANDLE_INVALID' : undefined);
      expect(await kindOf(engine.encrypt('test-key-1', Buffer.from('x'), EMPTY))).toBe('device');
      faults.inspect = undefined;
      expect(engine.isConnected()).toBe(true);
    } finally {
      await engine.close();
    }
  });
});
