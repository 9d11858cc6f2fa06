import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createSetup, nssMissing } from '../testbed/hsm-setups';
import { StoreHarness } from './admin-harness';
import { describeWhenPresent } from './support/suites';

/**
 * BYOK with RSAES-OAEP-SHA256, KMS's default, end to end on NSS softoken: SoftHSM2 2.6 unwraps OAEP only
 * with SHA-1 (test/byok.test.ts), NSS does SHA-256 with MGF1-SHA256. The suite brings its own NSS
 * database; the rest of the run may be on any setup. Setup (Debian): apt-get install libnss3 libnss3-tools.
 */

const h = new StoreHarness();
const ok = (...a: string[]) => h.ok(...a);
const admin = (...a: string[]) => h.admin(...a);
afterAll(() => h.stop()); // also when skipped: the harness made its temp dir already
const hsmLabels = async () => JSON.stringify(await ok('hsm', 'list-keys'));

/** The customer's side, exactly the command import-params prints (SHA-256 for OAEP and MGF1). */
const opensslWrap = (publicPem: string, material: Buffer, name: string) => h.opensslWrap(publicPem, material, name, 'sha256');

async function params(name: string, ...extra: string[]): Promise<{ label: string; pem: string }> {
  const pem = join(h.dir, `${name}.pem`);
  const out = await ok('key', 'import-params', '--out', pem, ...extra);
  expect(out.algorithm).toBe('RSAES_OAEP_SHA_256');
  return { label: out.wrappingKey as string, pem };
}

describeWhenPresent(nssMissing())('BYOK with RSAES-OAEP-SHA256 on NSS softoken', () => {
  const material = randomBytes(32);

  beforeAll(async () => {
    const nss = await createSetup('nss', join(h.dir, 'nss'));
    const { modulePath, libraryParameters, tokenLabel, pin } = nss;
    await h.init({ hsm: { modulePath, libraryParameters, tokenLabel, pin: { value: pin }, sessionPoolSize: 2, healthKeyLabel: 'health-key' } });
    await ok('hsm', 'generate-key', '--label', 'health-key');
  });

  it('imports an openssl-wrapped key into NSS; a proxy on that token encrypts with exactly that key', async () => {
    const { label, pem } = await params('a');
    const wrapped = await opensslWrap(pem, material, 'a');
    expect(readFileSync(wrapped).length).toBe(384);
    // NSS reports CKA_VALUE_LEN of an unwrapped key, so the direct form has its length checked too.
    expect(await ok('key', 'import', 'byok-nss', '--group', 'g', '--wrapped', wrapped, '--wrapping-key', label)).toMatchObject({ wrappingKeyDestroyed: label, keyLength: 'verified: 32 bytes' });
    expect(await hsmLabels()).toContain('xks-byok-nss-v1');

    await h.start();
    await h.expectEncryptsWith('byok-nss', material);
  });

  it('refuses material wrapped for another wrapping key, and material of the wrong length', async () => {
    const a = await params('wrong-a');
    const b = await params('wrong-b');
    const forA = await opensslWrap(a.pem, randomBytes(32), 'wrong');
    const r = await admin('key', 'import', 'byok-nss-w', '--group', 'g', '--wrapped', forA, '--wrapping-key', b.label);
    expect(r.code).toBe(1);
    // NSS answered CKR_ARGUMENTS_BAD instead of CKR_WRAPPED_KEY_INVALID in one full run out of several; the
    // wrap is random, and the likely cause is a ciphertext made for A's modulus that is not below B's,
    // refused before OAEP is checked. Both codes are this same refusal, with the same message.
    expect(r.err).toMatch(/could not unwrap the key material: not wrapped with this wrapping key's public key, or not RSAES-OAEP-SHA256 \(CKR_(WRAPPED_KEY_INVALID|ARGUMENTS_BAD)\)/);
    // SoftHSM2 cannot show this one: NSS reports the unwrapped length, and a 16-byte key is refused and destroyed.
    const short = await opensslWrap(a.pem, randomBytes(16), 'short');
    expect((await admin('key', 'import', 'byok-nss-w', '--group', 'g', '--wrapped', short, '--wrapping-key', a.label)).err).toMatch(/unwrapped key material is 16 bytes; an AES-256 key \(32 bytes\) is required/);
    expect(await hsmLabels()).not.toContain('xks-byok-nss-w');
    expect(readFileSync(h.configFile, 'utf8')).not.toContain('byok-nss-w');
  });

  it('refuses expired parameters, also on a retry', async () => {
    // Valid for about a millisecond: expired by the time the next xks-admin process reads its clock.
    const { label, pem } = await params('exp', '--expires-hours', '0.0000003');
    const wrapped = await opensslWrap(pem, randomBytes(32), 'exp');
    expect((await admin('key', 'import', 'byok-nss-e', '--group', 'g', '--wrapped', wrapped, '--wrapping-key', label)).err).toMatch(/import parameters .* expired at/);
    expect((await admin('key', 'import', 'byok-nss-e', '--group', 'g', '--wrapped', wrapped, '--wrapping-key', label)).err).toMatch(/expired/);
    expect(readFileSync(join(h.dir, 'audit.log.admin'), 'utf8')).toContain('"reason":"expired"');
  });
});
