import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import * as pkcs11js from 'pkcs11js';
import { generateKek, kekTemplate } from '../../src/engine/token';
import { createSetup, openSetupSession, setupName, stopSetup, type HsmSetup } from '../../testbed/hsm-setups';
import type { TestHsm } from './hsm';

/** Creates one real token for the whole run (XKS_TEST_HSM_SETUP: softhsm, nss or p11kit), with the keys the suites use. */
export default async function globalSetup(): Promise<void> {
  // Suites that start the proxy, xks-admin or the bench as processes run dist/ and dist-bench/: bring them
  // up to date with the source first (tsc's build mode skips what is current), so no suite tests an old build.
  execFileSync('npm', ['run', '--silent', 'build:bench'], { cwd: join(__dirname, '..', '..'), stdio: 'inherit' });
  const name = setupName();
  const dir = mkdtempSync(join(tmpdir(), `xks-test-${name}-`));
  const file = join(dir, 'hsm.json');
  // Teardown stops whatever was started, also when key creation fails below.
  process.env.XKS_TEST_HSM = file;
  const setup = await createSetup(name, dir);
  writeFileSync(file, JSON.stringify(setup));
  let keys: Pick<TestHsm, 'knownKeyHex' | 'transportKeyHex'>;
  try {
    keys = createKeys(setup);
  } catch (e) {
    stopSetup(setup);
    throw e;
  }
  const info: TestHsm = { ...setup, ...keys };
  writeFileSync(file, JSON.stringify(info));
  // Suites that start the module themselves (xks-admin, faults) inherit what it reads at load time.
  Object.assign(process.env, setup.environment);
}

function createKeys(setup: HsmSetup): Pick<TestHsm, 'knownKeyHex' | 'transportKeyHex'> {
  const t = openSetupSession(setup);
  const knownKey = randomBytes(32);
  const transportKey = randomBytes(32);
  try {
    for (const label of ['test-key-1', 'test-key-2', 'test-key-3', 'test-key-4', 'test-key-1-v2', 'health-key']) generateKek(t, label);
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
  return { knownKeyHex: knownKey.toString('hex'), transportKeyHex: transportKey.toString('hex') };
}
