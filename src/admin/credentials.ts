import { mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Document } from 'yaml';
import { ConfigError, resolveSecret } from '../config/load';
import type { KeyStoreConfig, ProxyConfig } from '../config/schema';
import { identityRecorded, secretSha256 } from '../governance/state';
import { generateCredential } from '../sigv4/credentials';
import { keyStoreIndex } from '../store/config-store';
import type { AdminContext } from './context';

/** The credential a command adds: made now (direct, propose: recorded for the approvers) or the proposal's (replay). */
function newCredential(ctx: AdminContext, ks: KeyStoreConfig): { accessKeyId: string; file: string; secret: string; secretSha256?: string } {
  const m = ctx.making;
  if (m.kind === 'replay') {
    const rec = m.made.credentials[ks.name];
    if (!rec) throw new ConfigError(`the proposal added no credential to key store "${ks.name}"; propose it again`);
    return { ...rec, secret: readFileSync(rec.file, 'utf8') };
  }
  const c = generateCredential();
  mkdirSync(ctx.secretsDir, { recursive: true, mode: 0o700 });
  const file = join(ctx.secretsDir, `${ks.name}-${c.accessKeyId}.key`);
  writeFileSync(file, c.secretAccessKey, { mode: 0o600, flag: 'wx' });
  // A key store whose identity is recorded keeps it recorded: the new secret's digest goes into the signed state.
  const made = { accessKeyId: c.accessKeyId, file, secretSha256: identityRecorded(ks) ? secretSha256(c.secretAccessKey) : undefined };
  if (m.kind === 'propose') m.made.credentials[ks.name] = made;
  return { ...made, secret: c.secretAccessKey };
}

/**
 * Rotation, step 1: a new credential, live beside the old one. The secret goes to a 0600 file that
 * the config references; the output is the JSON file the KMS console accepts (spec, "XKS proxy
 * configuration in AWS KMS console"). Step 2 is UpdateCustomKeyStore in KMS; step 3 is retire.
 * A key store that reaches a quorum-protected group and records its identity adds it as a governed change: the
 * proposal makes the secret (approvers sign its SHA-256, never see it), apply prints it.
 */
export function addCredential(ctx: AdminContext, keyStore: string): object {
  const config = ctx.store.read();
  const c = newCredential(ctx, config.keyStores[keyStoreIndex(config, keyStore)]!);
  let prefix = '';
  try {
    ctx.store.update((doc, now) => {
      const ki = keyStoreIndex(now, keyStore);
      prefix = now.keyStores[ki]!.pathPrefix;
      doc.addIn(['keyStores', ki, 'credentials'], doc.createNode({ accessKeyId: c.accessKeyId, secretAccessKey: { file: c.file }, createdAt: ctx.now().toISOString(), secretSha256: c.secretSha256 }));
    });
  } catch (e) {
    // A proposal's secret stays with the proposal (change withdraw removes it).
    if (ctx.making.kind === 'direct') unlinkSync(c.file);
    throw e;
  }
  ctx.audit({ action: 'credential-add', keyStore, accessKeyId: c.accessKeyId });
  return {
    XksProxyUriPath: `${prefix}/kms/xks/v1`,
    XksProxyAuthenticationCredential: { AccessKeyId: c.accessKeyId, RawSecretAccessKey: c.secret },
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
  return { keyStore, accessKeyIds: ks.credentials.map((c) => c.accessKeyId), identityRecorded: identityRecorded(ks) };
}

/**
 * Writes the SHA-256 of each credential's secret that has none (resolved where xks-admin runs, as the proxy
 * resolves it). Returns how many it wrote.
 */
export function recordDigests(doc: Document, config: ProxyConfig, ki: number): number {
  const ks = config.keyStores[ki]!;
  let written = 0;
  ks.credentials.forEach((c, ci) => {
    if (c.secretSha256 !== undefined) return;
    const where = `keyStores[${ki}].credentials[${ci}].secretAccessKey`;
    doc.setIn(['keyStores', ki, 'credentials', ci, 'secretSha256'], secretSha256(resolveSecret(c.secretAccessKey, process.env, where)));
    written++;
  });
  return written;
}


/** DISABLED: InvalidStateException for every operation of the key store. For a key store whose identity a protected group records, a governed change. */
export function setKeyStoreStatus(ctx: AdminContext, keyStore: string, status: 'ENABLED' | 'DISABLED'): object {
  ctx.store.update((doc, config) => doc.setIn(['keyStores', keyStoreIndex(config, keyStore), 'status'], status));
  ctx.audit({ action: status === 'ENABLED' ? 'key-store-enable' : 'key-store-disable', keyStore });
  return { keyStore, status };
}
