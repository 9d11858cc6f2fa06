#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { auditHeads, verifyAudit } from '../admin/audit';
import { AdminContext } from '../admin/context';
import { trustReplication } from '../admin/fleet';
import { addCredential, listCredentials, retireCredential } from '../admin/credentials';
import { assignGroup, createGroup, listGroups, setGroupPolicy, setGroupStatus } from '../admin/groups';
import {
  cancelDeletion,
  createKey,
  describeKey,
  importKey,
  listKeys,
  purgeKey,
  rotateKey,
  scheduleDeletion,
  setKeyStatus,
} from '../admin/keys';
import { findSecretKeys, generateKek, keyLabel, openTokenSession, TokenSession, WrapMechanism } from '../engine/token';
import { KEY_USAGES, KeyUsage } from '../config/schema';
import { generateCredential } from '../sigv4/credentials';

const USAGE = `usage: xks-admin [--config FILE] <command> [options]

Key and group store (the proxy's config file; a running proxy picks changes up without restart):
  group create NAME [--allow-all]          new group (no rules = every request denied)
  group enable|disable NAME
  group set-policy NAME --file RULES.yaml  replace the group's rules
  group assign NAME --key-store KS         let a key store reach the group's keys
  group list
  key create ID --group G [--usage ENCRYPT,DECRYPT]
                                           generate a non-extractable AES-256 key in the HSM; --usage
                                           lists any of ENCRYPT DECRYPT SIGN VERIFY WRAP UNWRAP
  key import ID --group G --wrapped FILE --wrapping-key LABEL [--mechanism aes-key-wrap-pad|aes-key-wrap]
                                           BYOK: unwrap key material under an existing HSM key
  key list | key describe ID
  key enable|disable ID
  key rotate ID                            new version in the HSM; old ciphertexts still decrypt
  key schedule-deletion ID [--days 30]     unusable now, destroyable after 7-30 days
  key cancel-deletion ID
  key purge ID                             destroy in the HSM once the waiting period is over
  credential add --key-store KS            new SigV4 credential; prints the KMS console JSON
  credential retire --key-store KS --access-key-id AKID
  credential list --key-store KS

Other:
  audit verify FILE|- [--partial] [--anchors FILE]
                                           check hash chains: an audit file, or collected log lines
                                           (stdin with -) holding the audit streams of many pods
  audit head FILE|- [--partial]            verify, then print each chain's last seq and hash as one
                                           JSON line: append it to an off-host anchors file
  hsm generate-key --label L               generate a KEK without touching the store
  hsm list-keys                            labels of the token's secret keys
  hsm trust-replication --source ID --target ID
                                           security officer, once per pair of a fleet's HSMs: trust the
                                           target's replication key on the source (SO PIN in XKS_HSM_SO_PIN)
  new-credential [--prefix P]              print a credential without touching the store

The HSM comes from the config's hsm section, or (hsm commands) --module PATH --token LABEL with the
PIN in XKS_HSM_PIN. The config is XKS_CONFIG when --config is not given.`;

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    config: { type: 'string' },
    group: { type: 'string' },
    usage: { type: 'string' },
    wrapped: { type: 'string' },
    'wrapping-key': { type: 'string' },
    mechanism: { type: 'string' },
    days: { type: 'string' },
    file: { type: 'string' },
    'key-store': { type: 'string' },
    'access-key-id': { type: 'string' },
    'allow-all': { type: 'boolean' },
    label: { type: 'string' },
    module: { type: 'string' },
    token: { type: 'string' },
    prefix: { type: 'string' },
    source: { type: 'string' },
    target: { type: 'string' },
    partial: { type: 'boolean' },
    anchors: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});

function need(value: string | undefined, what: string): string {
  if (!value) throw new Error(`${what} is required (see --help)`);
  return value;
}

function context(): AdminContext {
  return new AdminContext(need(opts.config ?? process.env.XKS_CONFIG, '--config'));
}

function usage(): KeyUsage[] {
  const list = (opts.usage ?? 'ENCRYPT,DECRYPT').split(',').map((u) => u.trim().toUpperCase());
  for (const u of list) if (!(KEY_USAGES as readonly string[]).includes(u)) throw new Error(`unknown usage ${u} (one of ${KEY_USAGES.join(', ')})`);
  return list as KeyUsage[];
}

function rawToken<T>(fn: (t: TokenSession) => T): T {
  if (opts.config || process.env.XKS_CONFIG) return context().withToken(fn);
  const pin = need(process.env.XKS_HSM_PIN, 'XKS_HSM_PIN');
  const t = openTokenSession({ modulePath: need(opts.module, '--module'), tokenLabel: need(opts.token, '--token') }, pin);
  try {
    return fn(t);
  } finally {
    t.close();
  }
}

function run(): unknown {
  const [noun, verb, arg] = positionals;
  const id = (): string => need(arg, 'the id/name argument');
  switch (`${noun ?? ''} ${verb ?? ''}`) {
    case 'group create':
      return createGroup(context(), id(), opts['allow-all'] === true);
    case 'group enable':
      return setGroupStatus(context(), id(), 'ENABLED');
    case 'group disable':
      return setGroupStatus(context(), id(), 'DISABLED');
    case 'group set-policy':
      return setGroupPolicy(context(), id(), need(opts.file, '--file'));
    case 'group assign':
      return assignGroup(context(), id(), need(opts['key-store'], '--key-store'));
    case 'group list':
      return listGroups(context());
    case 'key create':
      return createKey(context(), { id: id(), group: need(opts.group, '--group'), usage: usage() });
    case 'key import': {
      const mechanism = (opts.mechanism ?? 'aes-key-wrap-pad') as WrapMechanism;
      if (mechanism !== 'aes-key-wrap' && mechanism !== 'aes-key-wrap-pad') throw new Error('--mechanism is aes-key-wrap or aes-key-wrap-pad');
      return importKey(context(), {
        id: id(),
        group: need(opts.group, '--group'),
        usage: usage(),
        wrapped: readFileSync(need(opts.wrapped, '--wrapped')),
        wrappingKey: need(opts['wrapping-key'], '--wrapping-key'),
        mechanism,
      });
    }
    case 'key list':
      return listKeys(context());
    case 'key describe':
      return describeKey(context(), id());
    case 'key enable':
      return setKeyStatus(context(), id(), 'ENABLED');
    case 'key disable':
      return setKeyStatus(context(), id(), 'DISABLED');
    case 'key rotate':
      return rotateKey(context(), id());
    case 'key schedule-deletion':
      return scheduleDeletion(context(), id(), Number(opts.days ?? '30'));
    case 'key cancel-deletion':
      return cancelDeletion(context(), id());
    case 'key purge':
      return purgeKey(context(), id());
    case 'credential add':
      return addCredential(context(), need(opts['key-store'], '--key-store'));
    case 'credential retire':
      return retireCredential(context(), need(opts['key-store'], '--key-store'), need(opts['access-key-id'], '--access-key-id'));
    case 'credential list':
      return listCredentials(context(), need(opts['key-store'], '--key-store'));
    case 'audit verify': {
      const result = verifyAudit(need(arg, 'FILE (or - for stdin)'), { partial: opts.partial, anchors: opts.anchors });
      if (!result.ok) process.exitCode = 1;
      return result;
    }
    case 'audit head': {
      const heads = auditHeads(need(arg, 'FILE (or - for stdin)'), { partial: opts.partial });
      if (!Array.isArray(heads)) {
        process.exitCode = 1;
        return heads;
      }
      for (const h of heads) console.log(JSON.stringify({ chain: h.chain, pod: h.pod, seq: h.seq, hash: h.hash, time: h.time }));
      return undefined;
    }
    case 'hsm generate-key': {
      const label = need(opts.label, '--label');
      rawToken((t) => generateKek(t, label));
      return { generated: label };
    }
    case 'hsm trust-replication':
      return trustReplication(context(), need(opts.source, '--source'), need(opts.target, '--target'), need(process.env.XKS_HSM_SO_PIN, 'XKS_HSM_SO_PIN'));
    case 'hsm list-keys':
      return rawToken((t) => findSecretKeys(t).map((k) => keyLabel(t, k)));
    default:
      if (noun === 'new-credential') {
        const c = generateCredential();
        return {
          XksProxyUriPath: `${opts.prefix ?? ''}/kms/xks/v1`,
          XksProxyAuthenticationCredential: { AccessKeyId: c.accessKeyId, RawSecretAccessKey: c.secretAccessKey },
        };
      }
      if (noun === undefined || opts.help || noun === 'help') {
        console.log(USAGE);
        process.exitCode = noun === undefined && !opts.help ? 2 : 0;
        return undefined;
      }
      throw new Error(`unknown command "${positionals.join(' ')}" (see --help)`);
  }
}

try {
  const out = run();
  if (out !== undefined) console.log(JSON.stringify(out, null, 2));
} catch (e) {
  console.error(`xks-admin: ${(e as Error).message}`);
  process.exitCode = 1;
}
