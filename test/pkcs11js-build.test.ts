import { expect } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { observedGcmLayout } from '../src/engine/pkcs11js-build';

/**
 * The pkcs11js patch (patches/pkcs11js+2.1.7.patch), checked on the installed binary by what it sends, and
 * the record of that check which the engine trusts for gcmParams v230 (scripts/build-pkcs11js.js): for
 * that very binary only. test/engine-nss.test.ts shows the 40 bytes are the right v2.30 layout.
 */
const root = join(__dirname, '..');
const release = join(dirname(require.resolve('pkcs11js/package.json')), 'build', 'Release');
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'xks-pkcs11js-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('the installed binary sends CK_PARAMS_AES_GCM as the v2.30 structure: SoftHSM2 refuses it, and takes v2.40', () => {
  const seen = JSON.parse(execFileSync(process.execPath, [join(root, 'scripts', 'pkcs11js-gcm-probe.js')], { encoding: 'utf8' })) as unknown;
  expect(seen).toEqual({ CK_PARAMS_AES_GCM: 'v230', observed: expect.stringContaining('CKR_ARGUMENTS_BAD') });
});

it('the install recorded that for this binary, and a record of another binary vouches for nothing', () => {
  expect(observedGcmLayout()).toBe('v230');
  copyFileSync(join(release, 'pkcs11.node'), join(dir, 'pkcs11.node'));
  copyFileSync(join(release, 'xks-gcm-probe.json'), join(dir, 'xks-gcm-probe.json'));
  expect(observedGcmLayout(dir)).toBe('v230');
  writeFileSync(join(dir, 'pkcs11.node'), Buffer.concat([Buffer.from('rebuilt'), Buffer.alloc(16)]));
  expect(observedGcmLayout(dir)).toBeUndefined();
  rmSync(join(dir, 'xks-gcm-probe.json'));
  expect(observedGcmLayout(dir)).toBeUndefined();
});
