import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { GcmLayout } from './gcm';

/** The installed addon's directory: pkcs11js loads build/Release/pkcs11.node. */
const RELEASE = join(dirname(require.resolve('pkcs11js/package.json')), 'build', 'Release');

/**
 * The CK_GCM_PARAMS layout the installed pkcs11js binary was seen to send for CK_PARAMS_AES_GCM, from
 * the record scripts/build-pkcs11js.js writes after building it (observed on SoftHSM2 by
 * scripts/pkcs11js-gcm-probe.js). Undefined when there is no record for this very binary (its SHA-256
 * differs, or it was never observed): nothing is then known about it.
 */
export function observedGcmLayout(release = RELEASE): GcmLayout | undefined {
  try {
    const record = JSON.parse(readFileSync(join(release, 'xks-gcm-probe.json'), 'utf8')) as { binary?: unknown; CK_PARAMS_AES_GCM?: unknown };
    const binary = createHash('sha256').update(readFileSync(join(release, 'pkcs11.node'))).digest('hex');
    if (record.binary !== binary) return undefined;
    return record.CK_PARAMS_AES_GCM === 'v230' || record.CK_PARAMS_AES_GCM === 'v240' ? record.CK_PARAMS_AES_GCM : undefined;
  } catch {
    return undefined;
  }
}
