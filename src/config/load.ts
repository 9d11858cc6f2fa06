import { timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { compileRule, CompiledRule } from '../policy/evaluate';
import { guardAgainstRollback } from '../governance/high-water';
import { checkGovernanceReferences, GovernanceError, RefusalReason, verifyGovernance } from '../governance/quorum';
import { identityRecorded, secretSha256 } from '../governance/state';
import { configSchema, GroupConfig, KeyStoreConfig, KeyUsage, ProxyConfig, SecretSource, SECRET_ACCESS_KEY } from './schema';

export class ConfigError extends Error {
  constructor(
    message: string,
    /** Set when governance (quorum or the pinned approver list) refused the config, not its syntax. */
    readonly governance?: { reason: RefusalReason; group?: string },
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

export interface KeyVersion {
  version: number;
  label: string;
}

interface GroupRuntime {
  name: string;
  status: 'ENABLED' | 'DISABLED';
  rules: readonly CompiledRule[];
}

export interface KeyRuntime {
  id: string;
  group: GroupRuntime;
  usage: ReadonlySet<KeyUsage>;
  /** As configured, duplicates dropped: GetKeyMetadata's keyUsage. */
  usageList: readonly KeyUsage[];
  /** The key's own status; the key is usable only when it and its group are enabled and no deletion is pending. */
  status: 'ENABLED' | 'DISABLED';
  pendingDeletion: boolean;
  versions: ReadonlyMap<number, KeyVersion>;
  current: KeyVersion;
}

/** ENABLED only when the key, its group and its key store all are, and no deletion is scheduled. */
export function effectiveStatus(key: KeyRuntime): 'ENABLED' | 'DISABLED' {
  return key.status === 'ENABLED' && key.group.status === 'ENABLED' && !key.pendingDeletion ? 'ENABLED' : 'DISABLED';
}

export interface KeyStoreRuntime {
  name: string;
  pathPrefix: string;
  regions: ReadonlySet<string>;
  status: 'ENABLED' | 'DISABLED';
  /** accessKeyId -> secret access key bytes. Non-enumerable (see hidden()). */
  readonly secrets: ReadonlyMap<string, Buffer>;
  requestsPerSecond: number;
  keys: ReadonlyMap<string, KeyRuntime>;
}

/** A validated configuration with every secret resolved; swapped as a whole on reload. */
export interface RuntimeConfig {
  config: ProxyConfig;
  keyStores: ReadonlyMap<string, KeyStoreRuntime>;
  /** PIN of each HSM of the fleet, by hsms[].id. Non-enumerable (see hidden()). */
  readonly hsmPins: ReadonlyMap<string, string>;
}

/**
 * Adds a secret as a non-enumerable property (as node-postgres does with `password`): logging,
 * serialising or spreading the object then leaves it out, whatever the logger's redaction list says.
 */
export function hidden<T extends object, K extends string, V>(obj: T, key: K, value: V): T & Readonly<Record<K, V>> {
  return Object.defineProperty(obj, key, { value, enumerable: false }) as T & Readonly<Record<K, V>>;
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || '(root)';
}

function formatZodError(error: z.ZodError): string {
  return error.issues.map((i) => `${formatPath(i.path)}: ${i.message}`).join('; ');
}

export function resolveSecret(source: SecretSource, env: NodeJS.ProcessEnv, where: string): string {
  if ('value' in source) return source.value;
  if ('env' in source) {
    const v = env[source.env];
    if (v === undefined || v === '') throw new ConfigError(`${where}: environment variable ${source.env} is not set`);
    return v;
  }
  try {
    return readFileSync(source.file, 'utf8').replace(/\r?\n$/, '');
  } catch (e) {
    throw new ConfigError(`${where}: cannot read secret file ${source.file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

function buildGroups(groups: readonly GroupConfig[]): Map<string, Map<string, KeyRuntime>> {
  const out = new Map<string, Map<string, KeyRuntime>>();
  for (const g of groups) {
    const group: GroupRuntime = { name: g.name, status: g.status, rules: g.policy.rules.map(compileRule) };
    const keys = new Map<string, KeyRuntime>();
    for (const k of g.keys) {
      const versions = k.versions ?? [{ version: 1, label: k.label as string }];
      const current = versions.reduce((a, b) => (b.version > a.version ? b : a));
      const usageList = [...new Set(k.usage)];
      keys.set(k.id, {
        id: k.id,
        group,
        usage: new Set(usageList),
        usageList,
        status: k.status,
        pendingDeletion: k.deletion !== undefined,
        versions: new Map(versions.map((v) => [v.version, v])),
        current,
      });
    }
    out.set(g.name, keys);
  }
  return out;
}

/**
 * The SHA-256 a credential records must be that of the secret resolved now: a secret file (or variable) changed
 * under a recorded credential is refused. Compared in constant time, as every comparison that involves a secret.
 */
function checkSecretDigest(secret: string, recorded: string | undefined, where: string, governed: string | undefined): void {
  if (recorded === undefined) return;
  if (timingSafeEqual(Buffer.from(secretSha256(secret), 'hex'), Buffer.from(recorded, 'hex'))) return;
  const message = `${where}: the secret does not match the credential's recorded secretSha256 (a secret changed outside xks-admin)`;
  if (governed === undefined) throw new ConfigError(`invalid configuration: ${message}`);
  throw new ConfigError(`refused by governance: ${message}; key store reaches quorum-protected group "${governed}"`, { reason: 'secret', group: governed });
}

/** `governed`: a quorum-protected group this key store reaches, if any (its recorded credentials are then governance's). */
function buildKeyStore(ks: KeyStoreConfig, index: number, env: NodeJS.ProcessEnv, groups: Map<string, Map<string, KeyRuntime>>, governed: string | undefined): KeyStoreRuntime {
  const secrets = new Map<string, Buffer>();
  const recorded = identityRecorded(ks);
  ks.credentials.forEach((c, ci) => {
    const where = `keyStores[${index}].credentials[${ci}].secretAccessKey`;
    if (governed !== undefined && recorded && c.secretSha256 === undefined) {
      throw new ConfigError(`refused by governance: keyStores[${index}].credentials[${ci}] (${c.accessKeyId}) has no secretSha256, but key store "${ks.name}" records its identity and reaches quorum-protected group "${governed}"`, { reason: 'secret', group: governed });
    }
    const secret = resolveSecret(c.secretAccessKey, env, where);
    if (!SECRET_ACCESS_KEY.test(secret)) {
      throw new ConfigError(`${where}: must be 43-64 characters of A-Z a-z 0-9 + / =`);
    }
    checkSecretDigest(secret, c.secretSha256, where, governed);
    secrets.set(c.accessKeyId, Buffer.from(secret, 'utf8'));
  });
  const keys = new Map<string, KeyRuntime>();
  ks.groups.forEach((name, gi) => {
    const groupKeys = groups.get(name);
    if (!groupKeys) throw new ConfigError(`keyStores[${index}].groups[${gi}]: no group named "${name}"`);
    for (const [id, key] of groupKeys) {
      const other = keys.get(id);
      if (other) throw new ConfigError(`keyStores[${index}]: external key id "${id}" is in both group "${other.group.name}" and "${name}"`);
      keys.set(id, key);
    }
  });
  const runtime = {
    name: ks.name,
    pathPrefix: ks.pathPrefix,
    regions: new Set(ks.regions),
    status: ks.status,
    requestsPerSecond: ks.requestsPerSecond,
    keys,
  };
  return hidden(runtime, 'secrets', secrets as ReadonlyMap<string, Buffer>);
}

/** Runs a governance check, reporting its refusal as the ConfigError the loaders and the reloader count and audit. */
function governed<T>(check: () => T): T {
  try {
    return check();
  } catch (e) {
    if (e instanceof GovernanceError) throw new ConfigError(`refused by governance: ${e.message}`, { reason: e.reason, group: e.group });
    throw e;
  }
}

/**
 * An HSM key belongs to one key entry: its label (and its CKA_ID where the store recorded one) may be named by
 * one key version of one group only, and not be a health-check key. A second entry would reach a key's
 * material around its group's status, policy and usage (a "shadow"). Labels are compared as the UTF-8 the
 * HSM receives (a lone surrogate becomes U+FFFD there), so two spellings of one label cannot pass as two keys.
 * Undefined when every HSM key has one owner; otherwise the refusal, naming both entries.
 */
function keyOwnerConflict(config: ProxyConfig): { message: string; group: string } | undefined {
  const owners = new Map<string, string>();
  const asSent = (label: string): string => Buffer.from(label, 'utf8').toString('utf8');
  for (const h of config.hsms) owners.set(`HSM key "${asSent(h.healthKeyLabel)}"`, `the health check of HSM "${h.id}"`);
  for (const g of config.groups) {
    for (const k of g.keys) {
      for (const v of k.versions ?? [{ version: 1, label: k.label as string, objectId: undefined }]) {
        const who = `key "${k.id}" (group "${g.name}") version ${v.version}`;
        for (const name of [`HSM key "${asSent(v.label)}"`, v.objectId === undefined ? undefined : `HSM key with CKA_ID ${v.objectId}`]) {
          if (name === undefined) continue;
          const other = owners.get(name);
          if (other !== undefined) return { message: `${name} is named by ${who} and by ${other}: an HSM key belongs to one key entry`, group: g.name };
          owners.set(name, who);
        }
      }
    }
  }
  return undefined;
}

/** Refuses a second owner of an HSM key in every config; under governance the refusal is a governance one (counted, audited). */
function checkKeyOwners(config: ProxyConfig): void {
  const conflict = keyOwnerConflict(config);
  if (!conflict) return;
  if (config.governance.administrators.length === 0 && !config.groups.some((g) => g.quorum)) throw new ConfigError(`invalid configuration: ${conflict.message}`);
  throw new ConfigError(`refused by governance: ${conflict.message}`, { reason: 'key-owner', group: conflict.group });
}

/**
 * Validates a parsed document and resolves its secrets; throws ConfigError naming the offending field.
 * `quorum: false` skips the governance check only for xks-admin's dry runs of a proposed change.
 */
export function buildRuntimeConfig(doc: unknown, env: NodeJS.ProcessEnv = process.env, opts: { quorum?: boolean } = {}): RuntimeConfig {
  const parsed = configSchema.safeParse(doc);
  if (!parsed.success) throw new ConfigError(`invalid configuration: ${formatZodError(parsed.error)}`);
  const config = parsed.data;
  const badReference = checkGovernanceReferences(config);
  if (badReference) throw new ConfigError(`invalid configuration: ${badReference}`);
  if (opts.quorum !== false) governed(() => verifyGovernance(config, env));
  checkKeyOwners(config);
  const seen = new Map<string, string>();
  config.keyStores.forEach((ks, i) =>
    ks.credentials.forEach((c) => {
      const other = seen.get(c.accessKeyId);
      if (other !== undefined && other !== ks.name) {
        throw new ConfigError(`keyStores[${i}].credentials: access key id ${c.accessKeyId} is also used by key store "${other}"`);
      }
      seen.set(c.accessKeyId, ks.name);
    }),
  );
  const groups = buildGroups(config.groups);
  const protectedGroups = new Set(config.groups.filter((g) => g.quorum).map((g) => g.name));
  const keyStores = new Map(config.keyStores.map((ks, i) => [ks.pathPrefix, buildKeyStore(ks, i, env, groups, ks.groups.find((g) => protectedGroups.has(g)))]));
  const hsmPins = new Map(config.hsms.map((h, i) => [h.id, resolveSecret(h.pin, env, config.hsms.length > 1 ? `hsms[${i}].pin` : 'hsm.pin')]));
  return hidden({ config, keyStores }, 'hsmPins', hsmPins as ReadonlyMap<string, string>);
}

export function parseConfigText(text: string, file: string): unknown {
  try {
    return parseYaml(text, { prettyErrors: true });
  } catch (e) {
    throw new ConfigError(`${file}: not valid YAML/JSON: ${(e as Error).message.split('\n')[0]}`);
  }
}

export function readConfigText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config file ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/**
 * The proxy's load, at start and on every reload: validation as buildRuntimeConfig, then the quorum-protected
 * groups' states against the newest ones accepted, which the HSMs hold (src/governance/high-water.ts).
 */
export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): RuntimeConfig {
  return loadConfigText(readConfigText(file), file, env);
}

/** loadConfigFile on text already read (the reloader keeps the text to count one refusal per content). */
export function loadConfigText(text: string, file: string, env: NodeJS.ProcessEnv = process.env): RuntimeConfig {
  const runtime = buildRuntimeConfig(parseConfigText(text, file), env);
  governed(() => guardAgainstRollback(runtime));
  return runtime;
}
