import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import * as pkcs11js from 'pkcs11js';
import { openTokenSession, generateKek, kekTemplate } from '../../src/engine/token';
import { MODULE, TestHsm } from './hsm';

/** Creates one real SoftHSM2 token for the whole run, with the keys the suites use. */
export default async function globalSetup(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'xks-test-'));
  const conf = join(dir, 'softhsm2.conf');
  execFileSync('mkdir', ['-p', join(dir, 'tokens')]);
  writeFileSync(conf, `directories.tokendir = ${dir}/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  const pin = randomBytes(8).toString('hex');
  const tokenLabel = 'xks-test';
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', tokenLabel, '--pin', pin, '--so-pin', randomBytes(8).toString('hex')], {
    env: { ...process.env, SOFTHSM2_CONF: conf },
    stdio: 'ignore',
  });

  const t = openTokenSession({ modulePath: MODULE, tokenLabel, environment: { SOFTHSM2_CONF: conf } }, pin);
  const knownKey = randomBytes(32);
  const transportKey = randomBytes(32);
  try {
    for (const label of ['test-key-1', 'test-key-2', 'test-key-1-v2', 'health-key']) generateKek(t, label);
    // A key whose value the tests know, imported as sensitive and non-extractable, so node:crypto can
    // independently check what the HSM produced (AAD layout, tag, IV).
    t.mod.C_CreateObject(t.session, [...kekTemplate('known-key'), { type: pkcs11js.CKA_VALUE, value: knownKey }]);
    // A BYOK transport key shared with the "customer" (the test), allowed to unwrap only.
    t.mod.C_CreateObject(t.session, [
      ...kekTemplate('transport-key').filter((a) => a.type !== pkcs11js.CKA_UNWRAP && a.type !== pkcs11js.CKA_ENCRYPT && a.type !== pkcs11js.CKA_DECRYPT),
      { type: pkcs11js.CKA_UNWRAP, value: true },
      { type: pkcs11js.CKA_ENCRYPT, value: false },
      { type: pkcs11js.CKA_DECRYPT, value: false },
      { type: pkcs11js.CKA_VALUE, value: transportKey },
    ]);
    // A key that could leave the HSM: the proxy must refuse to use it.
    t.mod.C_CreateObject(t.session, [
      ...kekTemplate('extractable-key').filter((a) => a.type !== pkcs11js.CKA_EXTRACTABLE && a.type !== pkcs11js.CKA_SENSITIVE),
      { type: pkcs11js.CKA_EXTRACTABLE, value: true },
      { type: pkcs11js.CKA_SENSITIVE, value: false },
      { type: pkcs11js.CKA_VALUE, value: randomBytes(32) },
    ]);
  } finally {
    t.close();
  }
  const info: TestHsm = { dir, conf, pin, tokenLabel, knownKeyHex: knownKey.toString('hex'), transportKeyHex: transportKey.toString('hex') };
  const file = join(dir, 'hsm.json');
  writeFileSync(file, JSON.stringify(info));
  process.env.XKS_TEST_HSM = file;
  process.env.SOFTHSM2_CONF = conf;
}
