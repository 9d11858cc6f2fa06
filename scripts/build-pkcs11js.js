#!/usr/bin/env node
// Builds the pkcs11js addon once, from the source patch-package has just patched (package.json postinstall),
// and records beside the binary what it sends for CK_PARAMS_AES_GCM, as scripts/pkcs11js-gcm-probe.js
// observes it on SoftHSM2. src/engine/pkcs11js-build.ts reads that record to decide whether gcmParams v230
// can be honoured; the record names the binary by its SHA-256, and node-gyp's rebuild empties build/, so
// no other binary is ever vouched for by it.
//
// Why here and not by pkcs11js's own install script: npm runs dependencies' install scripts before the root
// postinstall, so the addon would be built unpatched, then again. package.json's allowScripts denies that
// script (npm 11); the Dockerfile runs `npm ci --ignore-scripts` then this (its npm 10 predates allowScripts).
// A binary that an older npm built before the patch is told apart by the probe and rebuilt.
// Usage: npm run postinstall (patch-package, then this); idempotent and quick when the record is current.
'use strict';
const { execFileSync } = require('node:child_process');
const { createHash } = require('node:crypto');
const { existsSync, readFileSync, writeFileSync } = require('node:fs');
const { dirname, join } = require('node:path');

const dir = dirname(require.resolve('pkcs11js/package.json'));
const binary = join(dir, 'build', 'Release', 'pkcs11.node');
// The file name and fields src/engine/pkcs11js-build.ts reads.
const recordFile = join(dir, 'build', 'Release', 'xks-gcm-probe.json');

const sha256 = (file) => (existsSync(file) ? createHash('sha256').update(readFileSync(file)).digest('hex') : undefined);
const probe = () => JSON.parse(execFileSync(process.execPath, [join(__dirname, 'pkcs11js-gcm-probe.js')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }));

function readRecord() {
  try {
    const record = JSON.parse(readFileSync(recordFile, 'utf8'));
    return record.binary === sha256(binary) ? record : undefined;
  } catch {
    return undefined;
  }
}

// npm's own node-gyp and nodedir (local Node headers, no download): npm passes both to lifecycle scripts;
// run by hand, ask npm for them.
function build() {
  const npmConfig = (name) => process.env[`npm_config_${name.replace(/-/g, '_')}`] ?? execFileSync('npm', ['config', 'get', name], { encoding: 'utf8' }).trim();
  const nodedir = npmConfig('nodedir');
  const args = [npmConfig('node-gyp'), 'rebuild', ...(nodedir && nodedir !== 'undefined' ? [`--nodedir=${nodedir}`] : [])];
  console.error('build-pkcs11js: building the pkcs11js addon from the patched source');
  execFileSync(process.execPath, args, { cwd: dir, stdio: ['ignore', 'inherit', 'inherit'] });
}

const known = readRecord();
if (known?.CK_PARAMS_AES_GCM) process.exit(0);
let seen = existsSync(binary) ? probe() : undefined;
// Built before the patch, or not seen and not built here: build it (again) from the patched source.
if (!seen || seen.CK_PARAMS_AES_GCM === 'v240' || (seen.CK_PARAMS_AES_GCM === null && !known)) {
  build();
  seen = probe();
}
if (seen.CK_PARAMS_AES_GCM === 'v240') {
  console.error(`build-pkcs11js: ${seen.observed}; is patches/pkcs11js+*.patch applied (npx patch-package)?`);
  process.exit(1);
}
if (seen.CK_PARAMS_AES_GCM === null) console.error(`build-pkcs11js: gcmParams v230 stays refused until this binary is checked: ${seen.observed}; install softhsm2, then npm run postinstall`);
writeFileSync(recordFile, `${JSON.stringify({ binary: sha256(binary), ...seen }, null, 2)}\n`);
