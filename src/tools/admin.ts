#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { auditHeads, verifyAudit } from '../admin/audit';
import { AdminContext } from '../admin/context';
import { trustReplication } from '../admin/fleet';
import { addCredential, listCredentials, retireCredential, setKeyStoreStatus } from '../admin/credentials';
import { addAdministrator, adminKeygen, applyChange, approveChange, Command, governancePin, listChanges, proposeChange, setQuorum, showChange, withdrawChange } from '../admin/governance';
import { rotateDue, setRotation } from '../admin/rotation';
import { byokWrap, importKeyRsa, importParams } from '../admin/byok';
import { assignGroup, createGroup, listGroups, recordGroupCommand, setGroupPolicy, setGroupStatus } from '../admin/groups';
import {
  cancelDeletion,
  createKey,
  describeKey,
  importKey,
  listKeys,
  purgeKey,
  rotateKey,
  scheduleDeletion,
  sealCheckValues,
  setKeyStatus,
} from '../admin/keys';
import { findSecretKeys, generateKek, keyLabel, openTokenSession, TokenSession, WrapMechanism } from '../engine/token';
import { KEY_USAGES, KeyUsage } from '../config/schema';
import { generateCredential } from '../sigv4/credentials';
import { buildRuntimeConfig, parseConfigText } from '../config/load';

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
  key import-params --out PUBLIC.pem [--bits 3072|4096] [--expires-hours 24] [--oaep-hash sha256|sha1]
                                           BYOK: RSA wrapping key pair in the HSM, public key to PUBLIC.pem
  key import ID --group G --wrapped FILE --wrapping-key LABEL [--mechanism rsa-oaep-sha256|aes-key-wrap-pad|aes-key-wrap]
                                           BYOK: unwrap key material inside the HSM (rsa-oaep-sha256 when
                                           LABEL comes from import-params; otherwise an AES transport key)
  byok wrap --public-key PUBLIC.pem --key-material KEY.bin --out KEY.wrapped [--oaep-hash sha256|sha1] [--rsa-aes]
                                           the customer's side: RSAES-OAEP wrap of a 32-byte key (--rsa-aes:
                                           the RSA-AES key wrap form, whose key length the HSM enforces)
  key list | key describe ID
  key enable|disable ID
  key rotate ID                            new version in the HSM; old ciphertexts still decrypt
  key check-values [ID] [--group G]        seal in the HSM a check value for each key version without one
                                           (made before they were recorded); the proxy then uses a version
                                           only on an HSM object that opens it
  key set-rotation ID [--every-days N] [--start-at ISO-TIME] [--max-encryptions N]
                                           rotation policy (no option: remove it)
  key rotate-due [--dry-run] [--usage-dir DIR]
                                           rotate every key whose policy says so (CronJob)
  key schedule-deletion ID [--days 30]     unusable now, destroyable after 7-30 days
  key cancel-deletion ID
  key purge ID                             destroy in the HSM once the waiting period is over
  key-store enable|disable KS              DISABLED: InvalidStateException for all of its operations
  credential add --key-store KS            new SigV4 credential; prints the KMS console JSON
  credential retire --key-store KS --access-key-id AKID
  credential list --key-store KS

Governance (quorum-protected groups; see README "Governance"):
  admin keygen --out FILE                  Ed25519 key pair: private key to FILE (0600), public key printed
  admin add NAME --role administrator|approver|auditor --public-key B64
  group set-quorum G --approvals M --approvers A,B,C
                                           also records G's check values and key store identities
  group record G                           once after an upgrade: record in G's signed state the check
                                           values its key versions lack and the identity (credentials'
                                           SHA-256) of each key store reaching it
  governance pin                           the governance root to pin in XKS_GOVERNANCE_TRUST
  change propose --as NAME <command...>    stage any command above that touches a protected group
  change approve ID --as NAME --key FILE   sign the exact state the change produces
  change apply ID --as NAME                write it with the signatures (refused without the quorum)
  change withdraw ID --as NAME             drop a pending change, destroying the HSM keys and secret
                                           files its proposal made
  change list | change show ID

Other:
  audit verify FILE|- [--partial] [--anchors FILE] [--chain NAME]
                                           check hash chains: an audit file (its chain is named by the
                                           file's name, or NAME), or collected log lines (stdin with -)
                                           holding the audit streams of many pods
  audit head FILE|- [--partial] [--chain NAME]
                                           verify, then print each chain's last seq and hash as one
                                           JSON line: append it to an off-host anchors file (one file
                                           for all chains: audit.log, audit.log.worker<N>, audit.log.admin)
  hsm generate-key --label L               generate a KEK without touching the store
  hsm list-keys                            labels of the token's secret keys
  hsm trust-replication --source ID --target ID
                                           security officer, once per pair of a fleet's HSMs: trust the
                                           target's replication key on the source (SO PIN in XKS_HSM_SO_PIN)
  new-credential [--prefix P]              print a credential without touching the store

The HSM comes from the config's hsm section, or (hsm commands) --module PATH --token LABEL with the
PIN in XKS_HSM_PIN. The config is XKS_CONFIG when --config is not given.`;

const parsed = parseArgs({
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
    chain: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
    as: { type: 'string' },
    key: { type: 'string' },
    out: { type: 'string' },
    role: { type: 'string' },
    'public-key': { type: 'string' },
    approvals: { type: 'string' },
    approvers: { type: 'string' },
    'every-days': { type: 'string' },
    'start-at': { type: 'string' },
    'max-encryptions': { type: 'string' },
    'dry-run': { type: 'boolean' },
    'usage-dir': { type: 'string' },
    bits: { type: 'string' },
    'expires-hours': { type: 'string' },
    'key-material': { type: 'string' },
    'oaep-hash': { type: 'string' },
    'rsa-aes': { type: 'boolean' },
  },
});
const { positionals } = parsed;
/** Replaced by a proposal's own options when a staged change is re-run. */
let opts: typeof parsed.values = parsed.values;
/** Options that name the person acting, not the change: left out of a proposal. */
const PERSONAL = new Set(['as', 'key', 'config', 'help']);

function need(value: string | undefined, what: string): string {
  if (!value) throw new Error(`${what} is required (see --help)`);
  return value;
}

let ctx: AdminContext | undefined;
/** One context per invocation, so a staged change runs against the store mode governance set. */
function context(now?: Date): AdminContext {
  ctx ??= new AdminContext(need(opts.config ?? process.env.XKS_CONFIG, '--config'), now ? () => now : undefined);
  return ctx;
}

/** Re-runs a command as proposed; time is the proposal's, so approvers and apply reproduce the same state. */
const runProposed: Command = (p) => {
  const own = opts;
  opts = { ...(p.options as typeof opts), config: own.config };
  try {
    return run(p.command);
  } finally {
    opts = own;
  }
};

function proposalTime(id: string): Date {
  return new Date(showChange(new AdminContext(need(opts.config ?? process.env.XKS_CONFIG, '--config')), id).proposedAt);
}

function usage(): KeyUsage[] {
  const list = (opts.usage ?? 'ENCRYPT,DECRYPT').split(',').map((u) => u.trim().toUpperCase());
  for (const u of list) if (!(KEY_USAGES as readonly string[]).includes(u)) throw new Error(`unknown usage ${u} (one of ${KEY_USAGES.join(', ')})`);
  return list as KeyUsage[];
}

/** The wrapped key material, read when the key is made (an approver replaying a BYOK proposal needs no copy of it). */
function wrappedFile(): () => Buffer {
  const file = need(opts.wrapped, '--wrapped');
  return () => readFileSync(file);
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

function run(positionals: string[]): unknown {
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
    case 'key import-params':
      return importParams(context(), { out: need(opts.out, '--out'), bits: Number(opts.bits ?? '3072'), hours: Number(opts['expires-hours'] ?? '24'), hash: opts['oaep-hash'] });
    case 'byok wrap':
      return byokWrap(need(opts['public-key'], '--public-key'), need(opts['key-material'], '--key-material'), need(opts.out, '--out'), opts['oaep-hash'], opts['rsa-aes'] === true);
    case 'key import': {
      const wrappingKey = need(opts['wrapping-key'], '--wrapping-key');
      // The import parameters' label names the RSA mechanism; anything else is an AES transport key.
      if (opts.mechanism === undefined && wrappingKey.startsWith('xks-import-')) {
        return importKeyRsa(context(), { id: id(), group: need(opts.group, '--group'), usage: usage(), wrapped: wrappedFile(), wrappingKey });
      }
      const mechanism = (opts.mechanism ?? 'aes-key-wrap-pad') as WrapMechanism;
      if (mechanism !== 'aes-key-wrap' && mechanism !== 'aes-key-wrap-pad') throw new Error('--mechanism is aes-key-wrap or aes-key-wrap-pad');
      return importKey(context(), {
        id: id(),
        group: need(opts.group, '--group'),
        usage: usage(),
        wrapped: wrappedFile(),
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
    case 'key check-values':
      return sealCheckValues(context(), { id: arg, group: opts.group });
    case 'key set-rotation': {
      const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
      return setRotation(context(), id(), { everyDays: num(opts['every-days']), startAt: opts['start-at'], maxEncryptions: num(opts['max-encryptions']) });
    }
    case 'key rotate-due':
      return rotateDue(context(), { dryRun: opts['dry-run'], usageDir: opts['usage-dir'] });
    case 'key schedule-deletion':
      return scheduleDeletion(context(), id(), Number(opts.days ?? '30'));
    case 'key cancel-deletion':
      return cancelDeletion(context(), id());
    case 'key purge':
      return purgeKey(context(), id());
    case 'key-store enable':
      return setKeyStoreStatus(context(), id(), 'ENABLED');
    case 'key-store disable':
      return setKeyStoreStatus(context(), id(), 'DISABLED');
    case 'credential add':
      return addCredential(context(), need(opts['key-store'], '--key-store'));
    case 'credential retire':
      return retireCredential(context(), need(opts['key-store'], '--key-store'), need(opts['access-key-id'], '--access-key-id'));
    case 'credential list':
      return listCredentials(context(), need(opts['key-store'], '--key-store'));
    case 'admin keygen':
      return adminKeygen(need(opts.out, '--out'));
    case 'admin add':
      return addAdministrator(context(), id(), need(opts.role, '--role'), need(opts['public-key'], '--public-key'));
    case 'group set-quorum':
      return setQuorum(context(), id(), Number(need(opts.approvals, '--approvals')), need(opts.approvers, '--approvers').split(',').map((a) => a.trim()));
    case 'group record':
      return recordGroupCommand(context(), id());
    case 'governance pin': {
      const c = context();
      return governancePin(c, parseConfigText(readFileSync(c.configFile, 'utf8'), c.configFile), (d) => buildRuntimeConfig(d, process.env, { quorum: false }).config);
    }
    case 'change propose': {
      const options = Object.fromEntries(Object.entries(opts).filter(([k, v]) => !PERSONAL.has(k) && v !== undefined)) as Record<string, string | boolean>;
      // One instant for the dry run and the recorded proposal time, which approve and apply replay.
      return proposeChange(context(new Date()), runProposed, need(opts.as, '--as'), positionals.slice(2), options);
    }
    case 'change approve':
      return approveChange(context(proposalTime(id())), runProposed, id(), need(opts.as, '--as'), need(opts.key, '--key'));
    case 'change apply':
      return applyChange(context(proposalTime(id())), runProposed, id(), need(opts.as, '--as'));
    case 'change withdraw':
      return withdrawChange(context(), id(), need(opts.as, '--as'));
    case 'change list':
      return listChanges(context());
    case 'change show':
      return showChange(context(), id());
    case 'audit verify': {
      const result = verifyAudit(need(arg, 'FILE (or - for stdin)'), { partial: opts.partial, anchors: opts.anchors, chain: opts.chain });
      if (!result.ok) process.exitCode = 1;
      return result;
    }
    case 'audit head': {
      const heads = auditHeads(need(arg, 'FILE (or - for stdin)'), { partial: opts.partial, chain: opts.chain });
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
  const out = run(positionals);
  if (out !== undefined) console.log(JSON.stringify(out, null, 2));
} catch (e) {
  console.error(`xks-admin: ${(e as Error).message}`);
  process.exitCode = 1;
}
