import { mkdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../config/load';
import { generateCredential } from '../sigv4/credentials';
import { keyStoreIndex } from '../store/config-store';
import type { AdminContext } from './context';

/**
 * Rotation, step 1: a new credential, live beside the old one. The secret goes to a 0600 file that
 * the config references; the output is the JSON file the KMS console accepts (spec, "XKS proxy
 * configuration in AWS KMS console"). Step 2 is UpdateCustomKeyStore in KMS; step 3 is retire.
 */
export function addCredential(ctx: AdminContext, keyStore: string): object {
  const c = generateCredential();
  mkdirSync(ctx.secretsDir, { recursive: true, mode: 0o700 });
  const file = join(ctx.secretsDir, `${keyStore}-${c.accessKeyId}.key`);
  writeFileSync(file, c.secretAccessKey, { mode: 0o600, flag: 'wx' });
  let prefix = '';
  try {
    ctx.store.update((doc, config) => {
      const ki = keyStoreIndex(config, keyStore);
      prefix = config.keyStores[ki]!.pathPrefix;
      doc.addIn(['keyStores', ki, 'credentials'], doc.createNode({ accessKeyId: c.accessKeyId, secretAccessKey: { file }, createdAt: ctx.now().toISOString() }));
    });
  } catch (e) {
    unlinkSync(file);
    throw e;
  }
  ctx.audit({ action: 'credential-add', keyStore, accessKeyId: c.accessKeyId });
  return {
    XksProxyUriPath: `${prefix}/kms/xks/v1`,
    XksProxyAuthenticationCredential: { AccessKeyId: c.accessKeyId, RawSecretAccessKey: c.secretAccessKey },
  };
}

/** Rotation, step 3: the old credential stops working on the next request. The last one cannot be retired. */
export function retireCredential(ctx: AdminContext, keyStore: string, accessKeyId: string): object {
  let secretFile: string | undefined;
  ctx.store.update((doc, config) => {
    const ki = keyStoreIndex(config, keyStore);
    const creds = config.keyStores[ki]!.credentials;
    const ci = creds.findIndex((c) => c.accessKeyId === accessKeyId);
    if (ci < 0) throw new ConfigError(`key store "${keyStore}" has no credential ${accessKeyId}`);
    if (creds.length === 1) throw new ConfigError('cannot retire the last credential of a key store; add a new one first');
    const src = creds[ci]!.secretAccessKey;
    if ('file' in src && src.file.startsWith(ctx.secretsDir)) secretFile = src.file;
    doc.deleteIn(['keyStores', ki, 'credentials', ci]);
  });
  if (secretFile) unlinkSync(secretFile);
  ctx.audit({ action: 'credential-retire', keyStore, accessKeyId });
  return { keyStore, retired: accessKeyId };
}

export function listCredentials(ctx: AdminContext, keyStore: string): object {
  const config = ctx.store.read();
  const ks = config.keyStores[keyStoreIndex(config, keyStore)]!;
  return { keyStore, accessKeyIds: ks.credentials.map((c) => c.accessKeyId) };
}
