#!/usr/bin/env node
// What the installed pkcs11js binary sends for CK_PARAMS_AES_GCM, seen from a real module: SoftHSM2 takes
// only the 48-byte v2.40 CK_GCM_PARAMS and answers CKR_ARGUMENTS_BAD to any other size, whatever the bytes
// hold. So on a session key, CK_PARAMS_AES_GCM_v240 must be taken (the control) and CK_PARAMS_AES_GCM
// refused for the binary to have the v2.30 patch (patches/pkcs11js+2.1.7.patch); taken means the unpatched
// 48-byte structure. That the 40 bytes are the right v2.30 layout is proven by test/engine-nss.test.ts on NSS.
// Prints one JSON line: {"CK_PARAMS_AES_GCM": "v230" | "v240" | null, "observed": "..."}; null when SoftHSM2
// is not installed. Run in a process of its own: a native addon cannot be reloaded after a rebuild.
'use strict';
const { execFileSync } = require('node:child_process');
const { randomBytes } = require('node:crypto');
const { existsSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');

const MODULE = process.env.SOFTHSM2_MODULE ?? '/usr/lib/softhsm/libsofthsm2.so';
const print = (layout, observed) => process.stdout.write(`${JSON.stringify({ CK_PARAMS_AES_GCM: layout, observed })}\n`);

function softhsmToken(dir) {
  mkdirSync(join(dir, 'tokens'));
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${dir}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n`);
  const pin = randomBytes(8).toString('hex');
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', 'gcm-probe', '--pin', pin, '--so-pin', randomBytes(8).toString('hex')], {
    env: { ...process.env, SOFTHSM2_CONF: conf },
    stdio: 'ignore',
  });
  return { conf, pin };
}

function observe(pkcs11js, token) {
  process.env.SOFTHSM2_CONF = token.conf;
  const mod = new pkcs11js.PKCS11();
  mod.load(MODULE);
  mod.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  try {
    const [slot] = mod.C_GetSlotList(true);
    const session = mod.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    mod.C_Login(session, pkcs11js.CKU_USER, token.pin);
    const key = mod.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN, parameter: null }, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
      { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
      { type: pkcs11js.CKA_TOKEN, value: false },
      { type: pkcs11js.CKA_ENCRYPT, value: true },
    ]);
    const gcm = (type) => ({ mechanism: pkcs11js.CKM_AES_GCM, parameter: { type, iv: randomBytes(12), ivBits: 96, tagBits: 128 } });
    mod.C_EncryptInit(session, gcm(pkcs11js.CK_PARAMS_AES_GCM_v240), key);
    mod.C_Encrypt(session, Buffer.alloc(16), Buffer.alloc(32));
    try {
      mod.C_EncryptInit(session, gcm(pkcs11js.CK_PARAMS_AES_GCM), key);
    } catch (e) {
      if (!/CKR_ARGUMENTS_BAD/.test(e.message)) throw e;
      return ['v230', 'SoftHSM2 took CK_PARAMS_AES_GCM_v240 and refused CK_PARAMS_AES_GCM with CKR_ARGUMENTS_BAD: not the 48-byte v2.40 structure'];
    }
    return ['v240', 'SoftHSM2 took CK_PARAMS_AES_GCM: the 48-byte v2.40 structure (pkcs11js unpatched)'];
  } finally {
    mod.C_Finalize();
  }
}

if (!existsSync(MODULE)) {
  print(null, `SoftHSM2 is not installed (${MODULE}): nothing to observe the binary with`);
} else {
  const dir = mkdtempSync(join(tmpdir(), 'xks-gcm-probe-'));
  try {
    print(...observe(require('pkcs11js'), softhsmToken(dir)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
