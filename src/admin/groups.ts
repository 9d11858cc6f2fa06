import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { ConfigError } from '../config/load';
import { groupIndex, keyStoreIndex } from '../store/config-store';
import type { AdminContext } from './context';

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

/** Lets a key store (a KMS external key store) reach a group's keys. */
export function assignGroup(ctx: AdminContext, name: string, keyStore: string): object {
  ctx.store.update((doc, config) => {
    groupIndex(config, name);
    const ki = keyStoreIndex(config, keyStore);
    if (config.keyStores[ki]!.groups.includes(name)) throw new ConfigError(`key store "${keyStore}" already reaches group "${name}"`);
    if (!doc.hasIn(['keyStores', ki, 'groups'])) doc.setIn(['keyStores', ki, 'groups'], doc.createNode([]));
    doc.addIn(['keyStores', ki, 'groups'], name);
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
