import { expect } from '@jest/globals';
import { constants, createCipheriv, publicEncrypt, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { StoreHarness } from './admin-harness';

const h = new StoreHarness();
const admin = (...a: string[]) => h.admin(...a);
const ok = (...a: string[]) => h.ok(...a);
const sfx = randomBytes(3).toString('hex');

let dir: string;
let configFile: string;
let reloader: StoreHarness['reloader'];

const opensslWrap = (publicPem: string, material: Buffer, name: string, hash: 'sha1' | 'sha256' = 'sha1') => h.opensslWrap(publicPem, material, name, hash);

/** SoftHSM2 2.6 unwraps RSAES-OAEP only with SHA-1 (its C_UnwrapKey refuses SHA-256 parameters). */
async function params(name: string, ...extra: string[]): Promise<{ label: string; pem: string }> {
  const pem = join(dir, `${name}.pem`);
  const out = await ok('key', 'import-params', '--out', pem, '--oaep-hash', 'sha1', ...extra);
  return { label: out.wrappingKey as string, pem };
}

const roundTrip = (keyId: string, material: Buffer) => h.expectEncryptsWith(keyId, material);

const hsmLabels = async () => JSON.stringify((await admin('hsm', 'list-keys')).out);

beforeAll(async () => {
  await h.init();
  await h.start();
  ({ dir, configFile, reloader } = h);
});

afterAll(() => h.stop());

describe('BYOK with an RSA wrapping key made in the HSM', () => {
  it('RSAES-OAEP-SHA256: round-trips where the HSM supports it, else is refused at import-params with the reason', async () => {
    const pem = join(dir, 's256.pem');
    const r = await admin('key', 'import-params', '--out', pem);
    if (r.code !== 0) {
      expect(r.err).toMatch(/this HSM does not do RSAES-OAEP with SHA256 \(CKR_ARGUMENTS_BAD\); SoftHSM2 2.6 supports only --oaep-hash sha1/);
      expect(await hsmLabels()).not.toMatch(/xks-import-[0-9a-f]{8}-sha256/); // the probe's pair is gone
      return;
    }
    const material = randomBytes(32);
    await ok('key', 'import', `byok-s256-${sfx}`, '--group', 'g', '--wrapped', await opensslWrap(pem, material, 's256', 'sha256'), '--wrapping-key', r.out.wrappingKey as string);
    expect(reloader.reload('test')).toBe(true);
    await roundTrip(`byok-s256-${sfx}`, material);
  });

  it('imports an openssl-wrapped key (RSA-3072 OAEP); the proxy encrypts with exactly that key', async () => {
    const { label, pem } = await params('a');
    expect(readFileSync(pem, 'utf8')).toMatch(/^-----BEGIN PUBLIC KEY-----/);
    const material = randomBytes(32);
    const wrapped = await opensslWrap(pem, material, 'a');
    expect(readFileSync(wrapped).length).toBe(384);
    const imported = await ok('key', 'import', `byok-a-${sfx}`, '--group', 'g', '--wrapped', wrapped, '--wrapping-key', label);
    expect(imported).toMatchObject({ wrappingKeyDestroyed: label, keyLength: expect.stringMatching(/^(verified: 32 bytes|not reported by this HSM)/) });
    expect(reloader.reload('test')).toBe(true);
    await roundTrip(`byok-a-${sfx}`, material);
    // Single use: the pair is gone, a replay of the same file is refused.
    const again = await admin('key', 'import', `byok-a2-${sfx}`, '--group', 'g', '--wrapped', wrapped, '--wrapping-key', label);
    expect(again.err).toMatch(/need exactly one wrapping key pair/);
  });

  it('imports the RSA-AES form made by xks-admin byok wrap under an RSA-4096 key; the HSM enforces the length', async () => {
    const { label, pem } = await params('b', '--bits', '4096');
    const material = randomBytes(32);
    writeFileSync(join(dir, 'b.bin'), material);
    expect(await ok('byok', 'wrap', '--public-key', pem, '--key-material', join(dir, 'b.bin'), '--out', join(dir, 'b.wrapped'), '--oaep-hash', 'sha1', '--rsa-aes')).toMatchObject({ bytes: 552 });
    expect(await ok('key', 'import', `byok-b-${sfx}`, '--group', 'g', '--wrapped', join(dir, 'b.wrapped'), '--wrapping-key', label)).toMatchObject({ keyLength: 'verified: 32 bytes' });
    expect(reloader.reload('test')).toBe(true);
    await roundTrip(`byok-b-${sfx}`, material);
  });

  it('refuses material wrapped for another wrapping key, and keeps the right one for a retry', async () => {
    const a = await params('wrong-a');
    const b = await params('wrong-b');
    const material = randomBytes(32);
    const forA = await opensslWrap(a.pem, material, 'wrong');
    const r = await admin('key', 'import', `byok-w-${sfx}`, '--group', 'g', '--wrapped', forA, '--wrapping-key', b.label);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/could not unwrap the key material: not wrapped with this wrapping key/);
    expect(readFileSync(configFile, 'utf8')).not.toContain(`byok-w-${sfx}`);
    expect(await hsmLabels()).not.toContain(`xks-byok-w-${sfx}`);
    await ok('key', 'import', `byok-w-${sfx}`, '--group', 'g', '--wrapped', forA, '--wrapping-key', a.label);
  });

  it('refuses expired parameters and destroys them', async () => {
    // Valid for about a millisecond: expired by the time the next xks-admin process reads its clock.
    const { label, pem } = await params('exp', '--expires-hours', '0.0000003');
    const wrapped = await opensslWrap(pem, randomBytes(32), 'exp');
    const r = await admin('key', 'import', `byok-e-${sfx}`, '--group', 'g', '--wrapped', wrapped, '--wrapping-key', label);
    expect(r.err).toMatch(/import parameters .* expired at/);
    const retry = await admin('key', 'import', `byok-e-${sfx}`, '--group', 'g', '--wrapped', wrapped, '--wrapping-key', label);
    expect(retry.err).toMatch(/expired/);
    expect(readFileSync(join(dir, 'audit.log.admin'), 'utf8')).toContain('"reason":"expired"');
  });

  it('refuses key material of the wrong length, wrapped or not', async () => {
    const { label, pem } = await params('len');
    // RSA-AES form: a 16-byte key wraps to 24 bytes, a tampered AES part fails the unwrap's integrity check.
    const eph = randomBytes(32);
    const rsaPart = publicEncrypt({ key: readFileSync(pem), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, eph);
    const kw = (key: Buffer) => {
      const c = createCipheriv('id-aes256-wrap', eph, Buffer.from('A6A6A6A6A6A6A6A6', 'hex'));
      return Buffer.concat([c.update(key), c.final()]);
    };
    writeFileSync(join(dir, 'short-kw.wrapped'), Buffer.concat([rsaPart, kw(randomBytes(16))]));
    const r1 = await admin('key', 'import', `byok-l-${sfx}`, '--group', 'g', '--wrapped', join(dir, 'short-kw.wrapped'), '--wrapping-key', label);
    expect(r1.err).toMatch(/must be 384 bytes \(RSAES-OAEP of an AES-256 key\) or 424 \(RSA-AES key wrap\), got 408/);
    const good = kw(randomBytes(32));
    good[5] = (good[5] as number) ^ 1;
    writeFileSync(join(dir, 'bad-kw.wrapped'), Buffer.concat([rsaPart, good]));
    const r2 = await admin('key', 'import', `byok-l-${sfx}`, '--group', 'g', '--wrapped', join(dir, 'bad-kw.wrapped'), '--wrapping-key', label);
    expect(r2.err).toMatch(/could not unwrap the AES part/);
    expect(await hsmLabels()).not.toContain(`xks-byok-l-${sfx}`);
    expect(readFileSync(configFile, 'utf8')).not.toContain(`byok-l-${sfx}`);
    // Direct OAEP form: a 16-byte key is refused where the HSM reports CKA_VALUE_LEN; SoftHSM2 2.6 does not, and says so.
    const short = await opensslWrap(pem, randomBytes(16), 'short');
    writeFileSync(join(dir, 'truncated.wrapped'), rsaPart.subarray(0, 100));
    expect((await admin('key', 'import', `byok-t-${sfx}`, '--group', 'g', '--wrapped', join(dir, 'truncated.wrapped'), '--wrapping-key', label)).err).toMatch(/must be 384 bytes/);
    const r3 = await admin('key', 'import', `byok-l-${sfx}`, '--group', 'g', '--wrapped', short, '--wrapping-key', label);
    if (r3.code === 0) expect(r3.out.keyLength).toMatch(/not reported by this HSM/);
    else expect(r3.err).toMatch(/unwrapped key material is 16 bytes; an AES-256 key \(32 bytes\) is required/);
    writeFileSync(join(dir, 'short.bin'), randomBytes(16));
    expect((await admin('byok', 'wrap', '--public-key', pem, '--key-material', join(dir, 'short.bin'), '--out', join(dir, 'x'))).err).toMatch(/must be 32 bytes/);
    expect((await admin('key', 'import-params', '--out', join(dir, 'x.pem'), '--bits', '2048')).err).toMatch(/3072 or 4096/);
  });
});
