import { createHash } from 'node:crypto';
import type { Document } from 'yaml';
import { ConfigError } from '../config/load';
import type { GroupConfig, KeyConfig, KeyUsage, ProxyConfig } from '../config/schema';
import { sealOnFleet } from '../engine/check-value';
import { destroyKeys, WrapMechanism } from '../engine/token';
import { importKeyVersion, keyLocations, makeKeyVersion, onEveryHsm, withHolders } from './fleet';
import { existingCheckValue, Path, PreparedVersion, prepareVersion } from './made';
import { groupIndex, keyPath } from '../store/config-store';
import type { AdminContext } from './context';

type Usage = KeyUsage;

export const versionLabel = (id: string, version: number): string => `xks-${id}-v${version}`;

/** A new key version as the store records it: label, when it was made, and the CKA_ID its HSM object gets. */
export interface NewVersion {
  label: string;
  createdAt: string;
  /** Hex; derived from label and time, so that a governed change's approvers reproduce it (a dry run makes no key). */
  objectId: string;
}

export function newVersion(ctx: AdminContext, label: string): NewVersion {
  const createdAt = ctx.now().toISOString();
  return { label, createdAt, objectId: createHash('sha256').update(`xks-proxy key object\n${label}\n${createdAt}`).digest('hex').slice(0, 32) };
}

export const objectIdBytes = (v: NewVersion): Buffer => Buffer.from(v.objectId, 'hex');
type Version = NonNullable<KeyConfig['versions']>[number];
const versionsOf = (k: KeyConfig): Version[] => k.versions ?? [{ version: 1, label: k.label as string }];

function keyAt(config: ProxyConfig, id: string): { path: (string | number)[]; key: KeyConfig } {
  const p = keyPath(config, id);
  return { path: ['groups', p.group, 'keys', p.key], key: config.groups[p.group]!.keys[p.key]! };
}

/** Adds a key with its version 1, made by `make` (which returns its check value) as this invocation makes keys. */
export function addKey(ctx: AdminContext, group: string, id: string, usage: Usage[], version: NewVersion, make: () => string): void {
  const prepared = prepareVersion(ctx, version, make);
  let at: Path = [];
  ctx.store.update(
    (doc, config) => {
      const gi = groupIndex(config, group);
      at = ['groups', gi, 'keys', config.groups[gi]!.keys.length, 'versions', 0];
      // The versions form records when version 1 was made (rotation schedules count from it), its CKA_ID and check value.
      doc.addIn(['groups', gi, 'keys'], doc.createNode({ id, versions: [{ version: 1, ...prepared.version }], usage }));
    },
    () => prepared.commit(at),
  );
}

/** Generates a KEK inside the HSM and adds it to a group. The config is checked before the HSM is touched. */
export function createKey(ctx: AdminContext, o: { group: string; id: string; usage: Usage[] }): object {
  const v = newVersion(ctx, versionLabel(o.id, 1));
  addKey(ctx, o.group, o.id, o.usage, v, () => makeKeyVersion(ctx, v.label, objectIdBytes(v)));
  ctx.audit({ action: 'key-create', keyId: o.id, group: o.group, label: v.label });
  return { created: o.id, group: o.group, label: v.label, version: 1 };
}

/** BYOK: unwraps customer key material under an existing HSM wrapping key, then adds it to a group. */
export function importKey(ctx: AdminContext, o: { group: string; id: string; usage: Usage[]; wrapped: () => Buffer; wrappingKey: string; mechanism: WrapMechanism }): object {
  const v = newVersion(ctx, versionLabel(o.id, 1));
  addKey(ctx, o.group, o.id, o.usage, v, () => importKeyVersion(ctx, v.label, o.wrappingKey, o.wrapped(), o.mechanism, objectIdBytes(v)));
  ctx.audit({ action: 'key-import', keyId: o.id, group: o.group, label: v.label, wrappingKey: o.wrappingKey });
  return { imported: o.id, group: o.group, label: v.label, version: 1 };
}

export function setKeyStatus(ctx: AdminContext, id: string, status: 'ENABLED' | 'DISABLED'): object {
  ctx.store.update((doc, config) => doc.setIn([...keyAt(config, id).path, 'status'], status));
  ctx.audit({ action: status === 'ENABLED' ? 'key-enable' : 'key-disable', keyId: id });
  return { keyId: id, status };
}

/** New key material in the HSM as the next version; new encrypts use it, old ciphertexts name theirs. */
export function rotateKey(ctx: AdminContext, id: string): object {
  let next = 0;
  let prepared: PreparedVersion<NewVersion> | undefined;
  let at: Path = [];
  ctx.store.update(
    (doc, config) => {
      const { path, key } = keyAt(config, id);
      const versions = versionsOf(key);
      next = Math.max(...versions.map((v) => v.version)) + 1;
      const made = newVersion(ctx, versionLabel(id, next));
      prepared = prepareVersion(ctx, made, () => makeKeyVersion(ctx, made.label, objectIdBytes(made)));
      at = [...path, 'versions', versions.length];
      doc.deleteIn([...path, 'label']);
      doc.setIn([...path, 'versions'], doc.createNode([...versions, { version: next, ...prepared.version }]));
    },
    () => prepared?.commit(at),
  );
  const label = prepared?.version.label ?? '';
  ctx.audit({ action: 'key-rotate', keyId: id, version: next, label });
  return { keyId: id, currentVersion: next, label };
}

/**
 * In a change: a check value, sealed on the HSM, for each version of the chosen keys that has none (and checked on
 * every other HSM that holds it); a key written as `label:` gets the versions form. Returns the versions sealed.
 */
export function fillCheckValues(ctx: AdminContext, doc: Document, config: ProxyConfig, chosen: (g: GroupConfig, k: KeyConfig) => boolean): { keyId: string; version: number; label: string }[] {
  const sealed: { keyId: string; version: number; label: string }[] = [];
  config.groups.forEach((g, gi) =>
    g.keys.forEach((k, ki) => {
      if (!chosen(g, k) || versionsOf(k).every((v) => v.checkValue !== undefined)) return;
      const path = ['groups', gi, 'keys', ki];
      const versions = versionsOf(k).map((v) => {
        if (v.checkValue !== undefined) return v;
        sealed.push({ keyId: k.id, version: v.version, label: v.label });
        return { ...v, checkValue: existingCheckValue(ctx, v.label, v.objectId, () => withHolders(ctx, v.hsms, (holders) => sealOnFleet(holders, v.label, v.objectId))) };
      });
      doc.deleteIn([...path, 'label']);
      doc.setIn([...path, 'versions'], doc.createNode(versions));
    }),
  );
  return sealed;
}

/**
 * `key check-values [ID] [--group G]`: check values for the key versions without one (those made before this
 * release recorded them). Under governance, a governed change whose check values the proposal seals.
 */
export function sealCheckValues(ctx: AdminContext, o: { id?: string; group?: string }): object {
  const config = ctx.store.read();
  if (o.id !== undefined) keyPath(config, o.id);
  if (o.group !== undefined) groupIndex(config, o.group);
  let sealed: object[] = [];
  ctx.store.update((doc, now) => {
    sealed = fillCheckValues(ctx, doc, now, (g, k) => (o.id === undefined || k.id === o.id) && (o.group === undefined || g.name === o.group));
    if (sealed.length === 0) throw new ConfigError('every chosen key version has a check value already');
  });
  ctx.audit({ action: 'key-check-values', versions: sealed.length, group: o.group, keyId: o.id });
  return { sealed };
}

/** Makes the key unusable at once; its HSM material can be destroyed only after `days`. */
export function scheduleDeletion(ctx: AdminContext, id: string, days: number): object {
  if (!Number.isInteger(days) || days < 7 || days > 30) throw new ConfigError('the waiting period must be 7 to 30 days');
  const now = ctx.now();
  const deletion = { requestedAt: now.toISOString(), notBefore: new Date(now.getTime() + days * 86_400_000).toISOString() };
  ctx.store.update((doc, config) => doc.setIn([...keyAt(config, id).path, 'deletion'], doc.createNode(deletion)));
  ctx.audit({ action: 'key-schedule-deletion', keyId: id, notBefore: deletion.notBefore });
  return { keyId: id, ...deletion };
}

export function cancelDeletion(ctx: AdminContext, id: string): object {
  ctx.store.update((doc, config) => {
    const { path, key } = keyAt(config, id);
    if (!key.deletion) throw new ConfigError(`key ${id} has no deletion scheduled`);
    doc.deleteIn([...path, 'deletion']);
  });
  ctx.audit({ action: 'key-cancel-deletion', keyId: id });
  return { keyId: id, deletion: 'cancelled' };
}

/** After the waiting period: destroys every version in the HSM and removes the key from the store. */
export function purgeKey(ctx: AdminContext, id: string): object {
  let labels: string[] = [];
  ctx.store.update(
    (doc, config) => {
      const { path, key } = keyAt(config, id);
      if (!key.deletion) throw new ConfigError(`key ${id} is not scheduled for deletion`);
      if (Date.parse(key.deletion.notBefore) > ctx.now().getTime()) {
        throw new ConfigError(`key ${id} cannot be destroyed before ${key.deletion.notBefore}`);
      }
      labels = versionsOf(key).map((v) => v.label);
      doc.deleteIn(path);
    },
    () => onEveryHsm(ctx, (t) => labels.forEach((l) => destroyKeys(t, l))),
  );
  ctx.audit({ action: 'key-purge', keyId: id, versions: labels.length });
  return { keyId: id, destroyed: labels };
}

export function describeKey(ctx: AdminContext, id: string): object {
  const config = ctx.store.read();
  const { key } = keyAt(config, id);
  const group = config.groups[keyPath(config, id).group]!;
  const versions = versionsOf(key);
  return {
    id: key.id,
    group: group.name,
    groupStatus: group.status,
    status: key.status,
    usage: key.usage,
    currentVersion: Math.max(...versions.map((v) => v.version)),
    versions: withLocations(ctx, versions),
    deletion: key.deletion,
    keyStores: config.keyStores.filter((ks) => ks.groups.includes(group.name)).map((ks) => ks.name),
  };
}

/** A fleet's versions also say where each lives (`presentOn`), beside where the config places it (`hsms`). */
function withLocations(ctx: AdminContext, versions: { version: number; label: string }[]): object[] {
  const where = keyLocations(ctx, versions.map((v) => v.label));
  return where ? versions.map((v) => ({ ...v, presentOn: where.get(v.label) ?? [] })) : versions;
}

export function listKeys(ctx: AdminContext): object[] {
  const config = ctx.store.read();
  return config.groups.flatMap((g) =>
    g.keys.map((k) => ({
      id: k.id,
      group: g.name,
      status: k.deletion ? 'PENDING_DELETION' : k.status,
      versions: versionsOf(k).length,
    })),
  );
}
