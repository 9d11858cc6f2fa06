import { existsSync, unlinkSync } from 'node:fs';
import { ConfigError } from '../config/load';
import type { ProxyConfig } from '../config/schema';
import { findSecretKeys, versionKey } from '../engine/token';
import type { Amendment } from '../store/config-store';
import type { AdminContext } from './context';
import { onEveryHsm } from './fleet';

/**
 * What a governed change makes before its approvals, because they sign it: a new key version's HSM key (its check
 * value is in the signed state, and only the key can seal it), an existing version's check value, a new credential's
 * secret (its SHA-256 is). `change propose` makes them and records them in the proposal; approve and apply replay
 * the command with them (approve touches no HSM; apply first checks each check value on every HSM that holds the
 * version); `change withdraw` destroys what a proposal made and never applied.
 */
export interface Made {
  /** By HSM label. `made`: the proposal made this key (withdraw destroys it); otherwise only sealed its check value. */
  keys: Record<string, { objectId?: string; checkValue: string; made: boolean }>;
  /** By key store: the credential the proposal added, its secret in `file` (0600), never in the proposal. */
  credentials: Record<string, { accessKeyId: string; file: string; secretSha256?: string }>;
}

/** direct: a command run as it is; propose: a governed change being proposed; replay: approved or applied. */
export type Making = { kind: 'direct' } | { kind: 'propose'; made: Made } | { kind: 'replay'; made: Made };

export const nothingMade = (): Made => ({ keys: {}, credentials: {} });

export type Path = (string | number)[];

/** A new key version as a command writes it, and the commit that makes it (direct only). */
export interface PreparedVersion<V> {
  version: V & { checkValue?: string };
  /** For ConfigStore.update: makes the key once the change validated, and writes its check value at `at`. */
  commit(at: Path): Amendment | undefined;
}

/**
 * A new key version's HSM key and check value, by how this invocation makes things: direct, the key is made once
 * the store validated the change and its check value then written beside it; proposed, it is made now so that the
 * approvers sign its check value; replayed, the proposal's.
 */
export function prepareVersion<V extends { label: string; objectId?: string }>(ctx: AdminContext, version: V, make: () => string): PreparedVersion<V> {
  const m = ctx.making;
  if (m.kind === 'direct') {
    return {
      version,
      commit: (at) => {
        const checkValue = make();
        return (doc) => doc.setIn([...at, 'checkValue'], checkValue);
      },
    };
  }
  if (m.kind === 'propose') {
    const checkValue = make();
    m.made.keys[version.label] = { objectId: version.objectId, checkValue, made: true };
    return { version: { ...version, checkValue }, commit: () => undefined };
  }
  const rec = m.made.keys[version.label];
  if (!rec?.made || rec.objectId !== version.objectId) throw new ConfigError(`the proposal made no HSM key "${version.label}" for this change; propose it again`);
  return { version: { ...version, checkValue: rec.checkValue }, commit: () => undefined };
}

/** The check value of an existing key version: sealed now (direct, propose: recorded for the approvers), or the proposal's. */
export function existingCheckValue(ctx: AdminContext, label: string, objectId: string | undefined, seal: () => string): string {
  const m = ctx.making;
  if (m.kind === 'replay') {
    const rec = m.made.keys[label];
    if (!rec || rec.objectId !== objectId) throw new ConfigError(`the proposal sealed no check value for "${label}"; propose it again`);
    return rec.checkValue;
  }
  const checkValue = seal();
  if (m.kind === 'propose') m.made.keys[label] = { objectId, checkValue, made: false };
  return checkValue;
}

/** Labels and secret files the store names: what a withdrawal must leave alone. */
function inUse(config: ProxyConfig): { labels: Set<string>; files: Set<string> } {
  const labels = new Set(config.groups.flatMap((g) => g.keys.flatMap((k) => (k.versions ?? [{ label: k.label as string }]).map((v) => v.label))));
  const files = new Set(config.keyStores.flatMap((ks) => ks.credentials.flatMap((c) => ('file' in c.secretAccessKey ? [c.secretAccessKey.file] : []))));
  return { labels, files };
}

/**
 * Destroys what a proposal made and the store does not use: its HSM keys (only the object with the recorded label
 * and CKA_ID, on every HSM) and its secret files. Returns what went.
 */
export function discardMade(ctx: AdminContext, made: Made): { keys: string[]; files: string[] } {
  const used = inUse(ctx.store.read());
  const keys = Object.entries(made.keys).filter(([label, k]) => k.made && !used.labels.has(label));
  if (keys.length > 0) {
    onEveryHsm(ctx, (t) => {
      for (const [label, k] of keys) {
        if (findSecretKeys(t, label).length === 0) continue;
        let key;
        try {
          key = versionKey(t, label, k.objectId);
        } catch {
          continue; // another object under the label: not the one this proposal made
        }
        t.mod.C_DestroyObject(t.session, key);
      }
    });
  }
  const files = Object.values(made.credentials).map((c) => c.file).filter((f) => !used.files.has(f) && existsSync(f));
  for (const f of files) unlinkSync(f);
  return { keys: keys.map(([label]) => label), files };
}
