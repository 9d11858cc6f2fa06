import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as pkcs11js from 'pkcs11js';
import type { HsmConfig } from '../src/engine/module';
import type { Pkcs11Engine } from '../src/engine/pkcs11-engine';
import { generateKek, openTokenSession } from '../src/engine/token';
import { nssMissing, softokenPath } from '../testbed/hsm-setups';
import { hsmConfig, kindOf, openEngine } from './support/engine';
import { describeWhenPresent } from './support/suites';

/**
 * The engine on NSS softoken, a second PKCS#11 implementation with other habits than SoftHSM2: it needs
 * libraryParameters, does single-part GCM only (also on empty input) and checks ulIvBits.
 * Setup (Debian): apt-get install libnss3 libnss3-tools.
 */
const missing = nssMissing();
const NSS = missing ? '' : softokenPath();
const EMPTY = Buffer.alloc(0);

describeWhenPresent(missing)('engine on NSS softoken', () => {
  const dir = mkdtempSync(join(tmpdir(), 'xks-nss-'));
  const pin = randomBytes(8).toString('hex');
  let nss: (over?: Partial<HsmConfig>) => HsmConfig;
  let opened: Pkcs11Engine | undefined;

  beforeAll(() => {
    writeFileSync(join(dir, 'pw'), pin);
    execFileSync('certutil', ['-N', '-d', `sql:${dir}`, '-f', join(dir, 'pw')], { stdio: 'ignore' });
    const libraryParameters = `configdir='sql:${dir}' certPrefix='' keyPrefix='' secmod='secmod.db' flags=`;
    nss = (over = {}) => hsmConfig({ modulePath: NSS, tokenLabel: 'NSS Certificate DB', libraryParameters, ...over });
    const t = openTokenSession(nss(), pin); // xks-admin's path: same parameters, NUL/space-padded label found
    try {
      generateKek(t, 'nss-key');
    } finally {
      t.close();
    }
  });
  afterEach(async () => {
    await opened?.close();
    opened = undefined;
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function open(hsm: HsmConfig, p = pin) {
    const r = await openEngine(hsm, p);
    opened = r.engine;
    return r;
  }

  it('pkcs11js still drops the last character of libraryParameters (when this fails, remove the workaround in src/engine/module.ts)', () => {
    const mod = new pkcs11js.PKCS11();
    mod.load(NSS);
    // Unquoted and without the workaround's trailing space: the binding passes "sql:<dir minus its last character>".
    expect(() => mod.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK, libraryParameters: `configdir=sql:${dir}` })).toThrow(/CKR_/);
  });

  it('connects, and round-trips with v2.40 GCM parameters (NSS checks ulIvBits = 96)', async () => {
    const { engine, faults } = await open(nss({ gcmParams: 'v240' }));
    expect(engine.status()).toEqual({ state: 'connected' });
    const sealed = await engine.encrypt('nss-key', Buffer.from('hello nss'), Buffer.from('aad'));
    expect((await engine.decrypt('nss-key', sealed.iv, Buffer.from('aad'), sealed.ciphertext, sealed.tag)).toString()).toBe('hello nss');
    faults.calls = {};
    const empty = await engine.encrypt('nss-key', EMPTY, EMPTY);
    // NSS does GCM single-part only: the empty plaintext goes through C_Encrypt, not Init+Final.
    expect(faults.calls).toMatchObject({ C_EncryptInit: 1, C_Encrypt: 1 });
    expect(faults.calls.C_EncryptFinal).toBeUndefined();
    expect((await engine.decrypt('nss-key', empty.iv, EMPTY, empty.ciphertext, empty.tag)).length).toBe(0);
    empty.tag[0]! ^= 1;
    expect(await kindOf(engine.decrypt('nss-key', empty.iv, EMPTY, empty.ciphertext, empty.tag))).toBe('tag-mismatch');
    expect((await engine.healthCheck()).status).toBe('ACTIVE');
  });

  // The pkcs11js patch (patches/), by what the built binary does: NSS takes the 40-byte v2.30 structure and
  // reads its IV and AAD where they are, so the v2.40 side decrypts what the v2.30 side sealed.
  it('gcmParams v230 sends the 40-byte v2.30 CK_GCM_PARAMS, which NSS takes, and interoperates with v2.40', async () => {
    const { engine: v230 } = await open(nss({ gcmParams: 'v230' }));
    expect(v230.status()).toEqual({ state: 'connected' });
    const sealed = await v230.encrypt('nss-key', Buffer.from('layout'), Buffer.from('a'));
    await v230.close();
    const { engine: v240 } = await open(nss({ gcmParams: 'v240' }));
    expect((await v240.decrypt('nss-key', sealed.iv, Buffer.from('a'), sealed.ciphertext, sealed.tag)).toString()).toBe('layout');
  });

  it('a wrong PIN is reported as C_Login returned CKR_PIN_INCORRECT', async () => {
    const { engine } = await open(nss(), 'not-the-pin');
    expect(engine.status()).toEqual({ state: 'misconfigured', reason: 'C_Login returned CKR_PIN_INCORRECT' });
  });

  it('without libraryParameters NSS refuses C_Initialize, and the engine says so', async () => {
    const { engine } = await open(nss({ libraryParameters: undefined }));
    expect(engine.status()).toEqual({ state: 'misconfigured', reason: 'C_Initialize returned CKR_ARGUMENTS_BAD' });
  });
});
