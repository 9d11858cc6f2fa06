import { readFileSync } from 'node:fs';
import { Document, parse } from 'yaml';
import { ConfigError } from '../config/load';
import type { ProxyConfig } from '../config/schema';
import { groupIndex, keyStoreIndex } from '../store/config-store';
import type { AdminContext } from './context';
import { recordDigests } from './credentials';
import { fillCheckValues } from './keys';

/** A new group; without --allow-all its policy has no rules, so every request is denied until rules are set. */
export function createGroup(ctx: AdminContext, name: string, allowAll: boolean): object {
  const rules = allowAll ? [{ id: 'allow-all', effect: 'allow' }] : [];
  ctx.store.update((doc, config) => {
    if (config.groups.some((g) => g.name === name)) throw new ConfigError(`group "${name}" exists`);
    if (!doc.has('groups')) doc.set('groups', doc.createNode([]));
    doc.addIn(['groups'], doc.createNode({ name, policy: { rules }, keys: [] }));
  });
  ctx.audit({ action: 'group-create', group: name, allowAll });
  return { created: name, rules: rules.length };
}

export function setGroupStatus(ctx: AdminContext, name: string, status: 'ENABLED' | 'DISABLED'): object {
  ctx.store.update((doc, config) => doc.setIn(['groups', groupIndex(config, name), 'status'], status));
  ctx.audit({ action: status === 'ENABLED' ? 'group-enable' : 'group-disable', group: name });
  return { group: name, status };
}

/** Replaces a group's rules with those in a YAML/JSON file (a list of rules, or {rules: [...]}). */
export function setGroupPolicy(ctx: AdminContext, name: string, file: string): object {
  const parsed = parse(readFileSync(file, 'utf8')) as unknown;
  const rules = Array.isArray(parsed) ? parsed : (parsed as { rules?: unknown })?.rules;
  if (!Array.isArray(rules)) throw new ConfigError(`${file}: expected a list of rules or {rules: [...]}`);
  ctx.store.update((doc, config) => doc.setIn(['groups', groupIndex(config, name), 'policy', 'rules'], doc.createNode(rules)));
  ctx.audit({ action: 'group-set-policy', group: name, rules: rules.length });
  return { group: name, rules: rules.length };
}

/**
 * Lets a key store (a KMS external key store) reach a group's keys. Assigned to a quorum-protected group (a governed
 * change), the key store's identity is recorded in the same change (xks-admin key-store record).
 */
export function assignGroup(ctx: AdminContext, name: string, keyStore: string): object {
  ctx.store.update((doc, config) => {
    const group = config.groups[groupIndex(config, name)]!;
    const ki = keyStoreIndex(config, keyStore);
    if (config.keyStores[ki]!.groups.includes(name)) throw new ConfigError(`key store "${keyStore}" already reaches group "${name}"`);
    if (!doc.hasIn(['keyStores', ki, 'groups'])) doc.setIn(['keyStores', ki, 'groups'], doc.createNode([]));
    doc.addIn(['keyStores', ki, 'groups'], name);
    if (group.quorum) recordDigests(doc, config, ki);
  });
  ctx.audit({ action: 'group-assign', group: name, keyStore });
  return { group: name, keyStore };
}

export function listGroups(ctx: AdminContext): object[] {
  const config = ctx.store.read();
  return config.groups.map((g) => ({
    name: g.name,
    status: g.status,
    keys: g.keys.length,
    rules: g.policy.rules.map((r) => `${r.effect}:${r.id}`),
    keyStores: config.keyStores.filter((ks) => ks.groups.includes(g.name)).map((ks) => ks.name),
  }));
}

/**
 * Puts in a protected group's signed state what releases before this one left out: a check value for each key
 * version without one (sealed on the HSM: src/engine/check-value.ts) and the identity of each key store reaching it
 * (its credentials' secrets as SHA-256). In the same change as the quorum (set-quorum), or once after an upgrade
 * as a governed change: xks-admin change propose --as NAME group record G.
 */
export function recordGroup(ctx: AdminContext, doc: Document, config: ProxyConfig, name: string): { checkValues: number; keyStores: string[] } {
  const checkValues = fillCheckValues(ctx, doc, config, (g) => g.name === name).length;
  const keyStores: string[] = [];
  config.keyStores.forEach((ks, ki) => {
    if (ks.groups.includes(name) && recordDigests(doc, config, ki) > 0) keyStores.push(ks.name);
  });
  return { checkValues, keyStores };
}

export function recordGroupCommand(ctx: AdminContext, name: string): object {
  let done = { checkValues: 0, keyStores: [] as string[] };
  ctx.store.update((doc, config) => {
    if (!config.groups[groupIndex(config, name)]!.quorum) throw new ConfigError(`group "${name}" has no quorum: what this records is signed by a quorum only`);
    done = recordGroup(ctx, doc, config, name);
    if (done.checkValues === 0 && done.keyStores.length === 0) throw new ConfigError(`group "${name}" has every check value and key store identity recorded already`);
  });
  ctx.audit({ action: 'group-record', group: name, checkValues: done.checkValues, keyStores: done.keyStores.join(' ') });
  return { group: name, ...done };
}
