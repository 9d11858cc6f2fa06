#!/usr/bin/env node
// Makes pkcs11js's CK_PARAMS_AES_GCM build the PKCS#11 v2.30 CK_GCM_PARAMS (40 bytes: pIv, ulIvLen, pAAD,
// ulAADLen, ulTagBits). pkcs11js 2.1.7 builds the 48-byte v2.40 structure for it too, with ulIvBits left
// uninitialised, so `hsm.gcmParams: v230` could not reach a v2.30 module. CK_PARAMS_AES_GCM_v240 is untouched.
// Run after npm ci (postinstall); idempotent; rebuilds the binding only when it changed the source.
// Usage: node scripts/patch-pkcs11js.js [path/to/node_modules/pkcs11js]
'use strict';
const { execFileSync } = require('node:child_process');
const { readFileSync, writeFileSync } = require('node:fs');
const { dirname, join } = require('node:path');

const dir = process.argv[2] ?? dirname(require.resolve('pkcs11js/package.json'));
const file = join(dir, 'src', 'params.cpp');
const MARK = 'CK_GCM_PARAMS_V230';
const source = readFileSync(file, 'utf8');
if (source.includes(MARK)) process.exit(0);

const from = [
  '  CK_AES_GCM_PARAMS_PTR params = CK_AES_GCM_PARAMS_PTR(malloc(sizeof(CK_AES_GCM_PARAMS)));\n  params->pIv = iv;\n  params->ulIvLen = ivLength;\n  params->pAAD = aad;',
  '  mechanism->ulParameterLen = sizeof(CK_AES_GCM_PARAMS);',
];
const to = [
  `  struct ${MARK} { CK_BYTE_PTR pIv; CK_ULONG ulIvLen; CK_BYTE_PTR pAAD; CK_ULONG ulAADLen; CK_ULONG ulTagBits; };\n  ${MARK} *params = (${MARK} *)malloc(sizeof(${MARK}));\n  params->pIv = iv;\n  params->ulIvLen = ivLength;\n  params->pAAD = aad;`,
  `  mechanism->ulParameterLen = sizeof(${MARK});`,
];
let patched = source;
for (let i = 0; i < from.length; i++) {
  if (patched.split(from[i]).length !== 2) {
    console.error(`patch-pkcs11js: ${file} does not look like pkcs11js 2.1.7; check whether it still needs this patch`);
    process.exit(1);
  }
  patched = patched.replace(from[i], to[i]);
}
writeFileSync(file, patched);
// npm's own node-gyp (the one that built the binding at install) and its nodedir (local Node headers, no
// download): npm passes both to lifecycle scripts; run by hand, ask npm for them.
const npmConfig = (name) => process.env[`npm_config_${name.replace(/-/g, '_')}`] ?? execFileSync('npm', ['config', 'get', name], { encoding: 'utf8' }).trim();
const nodeGyp = npmConfig('node-gyp');
const nodedir = npmConfig('nodedir');
const args = [nodeGyp, 'rebuild', ...(nodedir && nodedir !== 'undefined' ? [`--nodedir=${nodedir}`] : [])];
try {
  execFileSync(process.execPath, args, { cwd: dir, stdio: 'inherit' });
} catch (e) {
  // Leave the source as the binary was built from, so that a later run tries again instead of
  // believing the (unbuilt) patch is in place.
  writeFileSync(file, source);
  console.error(`patch-pkcs11js: rebuilding pkcs11js failed (${e.message}); the binding is unchanged`);
  process.exit(1);
}
