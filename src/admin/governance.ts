import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../config/load';
import type { ProxyConfig } from '../config/schema';
import { openOnEach } from '../engine/check-value';
import { Claim, claimsOf, judgeClaims, Mark } from '../governance/epochs';
import { readMarks, recordMarks } from '../governance/high-water';
import { generateApproverKey, publicKeyOf, signApproval } from '../governance/signatures';
import { countsTowardsQuorum, GovernanceError } from '../governance/quorum';
import { governanceRootHash, groupStateHash } from '../governance/state';
import { groupIndex } from '../store/config-store';
import type { AdminContext } from './context';
import { onEveryHsm, withHolders } from './fleet';
import { discardMade, Made, Making, nothingMade } from './made';
import { recordGroup } from './groups';
import { Approval, StagedChange } from './staged-store';

/** A pending change: the command to run, the group states it produces, and the signatures collected. */
export interface Proposal {
  id: string;
  proposedBy: string;
  proposedAt: string;
  command: string[];
  options: Record<string, string | boolean>;
  /** group name -> canonical state hash after the change. */
  groups: Record<string, string>;
  /** Set when the change alters the administrators or a quorum policy: the pin must allow it. */
  governanceRoot?: string;
  /** When its approvals stop counting (governance.approvalTtlHours after proposedAt). */
  expiresAt?: string;
  approvals: Record<string, Approval[]>;
  /** HSM keys, check values and secrets the proposal made for its approvers to sign (src/admin/made.ts). */
  made?: Made;
}

/** Runs an admin command (as the CLI would) against the context it is given. */
export type Command = (p: Pick<Proposal, 'command' | 'options'>) => unknown;

const changesDir = (ctx: AdminContext): string => `${ctx.configFile}.changes`;
const proposalFile = (ctx: AdminContext, id: string): string => {
  if (!/^[0-9a-f]{12}$/.test(id)) throw new ConfigError(`"${id}" is not a change id`);
  return join(changesDir(ctx), `${id}.json`);
};

function readProposal(ctx: AdminContext, id: string): Proposal {
  const file = proposalFile(ctx, id);
  if (!existsSync(file)) throw new ConfigError(`no pending change ${id}`);
  return JSON.parse(readFileSync(file, 'utf8')) as Proposal;
}

function writeProposal(ctx: AdminContext, p: Proposal): void {
  mkdirSync(changesDir(ctx), { recursive: true, mode: 0o750 });
  const file = proposalFile(ctx, p.id);
  writeFileSync(`${file}.tmp`, JSON.stringify(p, null, 2), { mode: 0o640 });
  renameSync(`${file}.tmp`, file);
}

/** What a command would do to the quorum-protected groups, without writing or touching the HSM. */
function dryRun(ctx: AdminContext, run: Command, p: Pick<Proposal, 'command' | 'options'>): { groups: Record<string, string>; governanceRoot?: string; after: ProxyConfig } {
  const before = ctx.store.read();
  let after: ProxyConfig | undefined;
  ctx.store.mode = { kind: 'dry-run' };
  try {
    run(p);
  } catch (e) {
    if (!(e instanceof StagedChange)) throw e;
    after = e.config;
  } finally {
    ctx.store.mode = { kind: 'direct' };
  }
  if (!after) throw new ConfigError(`"${p.command.join(' ')}" does not change the store; nothing to propose`);
  const groups: Record<string, string> = {};
  for (const g of after.groups) {
    if (!g.quorum) continue;
    const old = before.groups.find((b) => b.name === g.name);
    const hash = groupStateHash(after, g);
    if (!old?.quorum || groupStateHash(before, old) !== hash) groups[g.name] = hash;
  }
  const root = governanceRootHash(after);
  return { groups, governanceRoot: root !== governanceRootHash(before) ? root : undefined, after };
}

/** The revisions a change gives its groups (epoch, predecessor, expiry), as its approvers sign them. */
function claimsOfChange(staged: { groups: Record<string, string>; after: ProxyConfig }): Claim[] {
  return claimsOf(staged.after).filter((c) => c.group in staged.groups);
}

/** Proposals and their approvals expire (governance.approvalTtlHours, default 72): a stale one is proposed again. */
function expiryProblem(p: Proposal, claims: readonly Claim[]): string | undefined {
  const now = Date.now();
  // A proposal file dated ahead would give its approvals a longer life than the TTL.
  if (Date.parse(p.proposedAt) > now + 300_000) return `it claims to be proposed at ${p.proposedAt}, in the future`;
  const expired = claims.find((c) => c.expiresAt !== undefined && Date.parse(c.expiresAt) < now);
  return expired ? `it expired at ${expired.expiresAt}; propose it again` : undefined;
}

/** The pending proposals that made an HSM key with this label: a new proposal of the same version collides with them. */
function madeBy(ctx: AdminContext, label: string): string[] {
  if (!existsSync(changesDir(ctx))) return [];
  return readdirSync(changesDir(ctx))
    .filter((f) => f.endsWith('.json'))
    .flatMap((f) => {
      try {
        return [readProposal(ctx, f.slice(0, -5))];
      } catch {
        return []; // not a proposal of ours: it names no key
      }
    })
    .filter((p) => p.made?.keys[label]?.made)
    .map((p) => p.id);
}

/** Runs fn with the invocation making things as `making`; back to direct after. */
function making<T>(ctx: AdminContext, m: Making, fn: () => T): T {
  ctx.making = m;
  try {
    return fn();
  } finally {
    ctx.making = { kind: 'direct' };
  }
}

/**
 * Stages a change. What the approvers must sign but only the HSM can make (a new key version and its check value,
 * a check value of an existing one) is made now, and a new credential's secret is written now (its SHA-256 is
 * signed); a change that is refused here takes them back, and `change withdraw` does for one never applied.
 */
export function proposeChange(ctx: AdminContext, run: Command, as: string, command: string[], options: Record<string, string | boolean>): object {
  const made = nothingMade();
  let staged: ReturnType<typeof dryRun>;
  try {
    staged = making(ctx, { kind: 'propose', made }, () => dryRun(ctx, run, { command, options }));
    if (Object.keys(staged.groups).length === 0 && !staged.governanceRoot) {
      throw new ConfigError(`"${command.join(' ')}" changes no quorum-protected group nor the governance root: run it directly`);
    }
  } catch (e) {
    try {
      discardMade(ctx, made);
    } catch (d) {
      throw new ConfigError(`${(e as Error).message} (and what the proposal made could not be taken back: ${(d as Error).message}; see xks-admin hsm list-keys)`);
    }
    const clash = /a key labelled "([^"]+)" already exists/.exec((e as Error).message)?.[1];
    const by = clash === undefined ? [] : madeBy(ctx, clash);
    if (by.length > 0) throw new ConfigError(`${(e as Error).message}: made by pending change ${by.join(', ')} (xks-admin change withdraw ${by[0]} --as NAME destroys it)`);
    throw e;
  }
  const { groups, governanceRoot, after } = staged;
  const expiresAt = claimsOf(after).find((c) => c.group in groups)?.expiresAt;
  const p: Proposal = {
    id: randomBytes(6).toString('hex'),
    proposedBy: as,
    proposedAt: ctx.now().toISOString(),
    command,
    options,
    groups,
    governanceRoot,
    expiresAt,
    approvals: {},
    made: Object.keys(made.keys).length + Object.keys(made.credentials).length > 0 ? made : undefined,
  };
  writeProposal(ctx, p);
  ctx.audit({ action: 'change-propose', change: p.id, by: as, command: command.join(' '), groups: Object.entries(p.groups).map(([g, h]) => `${g}:${h}`).join(' ') });
  return { ...p, note: governanceRoot ? `this change alters the governance root: XKS_GOVERNANCE_TRUST must list ${governanceRoot} before it applies` : undefined };
}

/**
 * An approver signs the exact state the change produces. The hash is recomputed here from the current
 * store and the command, never taken from the proposal file, so a proposer cannot make anyone sign
 * something other than what the command does.
 */
export function approveChange(ctx: AdminContext, run: Command, id: string, as: string, privateKeyFile: string): object {
  const p = readProposal(ctx, id);
  const staged = making(ctx, replayOf(p), () => dryRun(ctx, run, p));
  const refuse = (reason: string): never => {
    ctx.audit({ action: 'change-approve-refused', change: id, by: as, command: p.command.join(' '), reason });
    throw new ConfigError(`change ${id}: ${reason}`);
  };
  const stale = expiryProblem(p, claimsOfChange(staged));
  if (stale) return refuse(stale);
  for (const [group, hash] of Object.entries(p.groups)) {
    if (staged.groups[group] !== hash) throw new ConfigError(`change ${id}: the store changed since it was proposed (group "${group}" would now be ${staged.groups[group] ?? 'unchanged'}); propose it again`);
  }
  const config = ctx.store.read();
  const admin = config.governance.administrators.find((a) => a.name === as);
  if (!admin) return refuse(`no administrator named "${as}"`);
  // The proxy counts a signature only from a signing administrator listed in the quorum of the state the
  // change produces (src/governance/quorum.ts): refuse now a signature that could never count at apply.
  const groups = Object.keys(p.groups);
  const counted = groups.filter((group) => countsTowardsQuorum(staged.after, group, as));
  if (groups.length > 0 && counted.length === 0) {
    const role = staged.after.governance.administrators.find((a) => a.name === as)?.role;
    return refuse(role === 'auditor' ? `"${as}" is an auditor, who cannot approve` : `"${as}" is not an approver in the quorum of group ${groups.map((g) => `"${g}"`).join(', ')}`);
  }
  const privateKeyPem = readFileSync(privateKeyFile, 'utf8');
  if (publicKeyOf(privateKeyPem) !== admin.publicKey) return refuse(`${privateKeyFile} is not the key of "${as}"`);
  // A change spanning groups with different approvers: each signs only where it counts.
  for (const group of counted) {
    const list = (p.approvals[group] ?? []).filter((a) => a.approver !== as);
    list.push({ approver: as, signature: signApproval(privateKeyPem, group, p.groups[group]!) });
    p.approvals[group] = list;
  }
  writeProposal(ctx, p);
  ctx.audit({ action: 'change-approve', change: id, by: as, command: p.command.join(' '), groups: counted.join(' ') });
  return { change: id, approvedBy: as, approvals: Object.fromEntries(Object.entries(p.approvals).map(([g, l]) => [g, l.map((a) => a.approver)])) };
}

/**
 * Runs the command for real with the collected signatures; the store's own quorum check decides. Before, the
 * change must be the next state after what the HSMs say was last accepted (a store rolled back or forked by hand
 * is refused here, not only later by the proxy); the store's own state is recorded first when no HSM holds it
 * yet but it follows the recorded one directly (an earlier apply whose record failed), as a proxy loading it
 * would. After, the new states are recorded, so that the proxy refuses the old file from now on, even before
 * it has loaded the new one.
 */
export function applyChange(ctx: AdminContext, run: Command, id: string, as: string): object {
  const p = readProposal(ctx, id);
  const staged = making(ctx, replayOf(p), () => dryRun(ctx, run, p));
  const claims = claimsOfChange(staged);
  const refuse = (reason: string): never => {
    ctx.audit({ action: 'change-refused', change: id, by: as, command: p.command.join(' '), error: reason.slice(0, 400) });
    throw new ConfigError(`change ${id}: ${reason}`);
  };
  const stale = expiryProblem(p, claims);
  if (stale) return refuse(stale);
  try {
    checkMadeOnHsms(ctx, p.made, staged.after);
  } catch (e) {
    return refuse(`${(e as Error).message}; withdraw it (xks-admin change withdraw ${id} --as NAME) and propose it again`);
  }
  if (claims.length > 0) {
    const marks: Mark[] = [];
    try {
      onEveryHsm(ctx, (t) => marks.push(...readMarks(t)));
      const current = claimsOf(ctx.store.read()).filter((c) => claims.some((n) => n.group === c.group));
      const caughtUp = judgeClaims(current, marks, new Date());
      if (caughtUp.length > 0) onEveryHsm(ctx, (t) => recordMarks(t, caughtUp));
      judgeClaims(claims, [...marks, ...caughtUp], new Date());
    } catch (e) {
      return refuse(e instanceof GovernanceError ? e.message : `cannot read the newest accepted states from the HSMs: ${(e as Error).message}`);
    }
  }
  ctx.store.mode = { kind: 'apply', approvals: p.approvals };
  ctx.making = replayOf(p);
  let out: unknown;
  try {
    out = run(p);
  } catch (e) {
    ctx.store.mode = { kind: 'direct' };
    ctx.audit({ action: 'change-refused', change: id, by: as, command: p.command.join(' '), error: (e as Error).message.slice(0, 400) });
    throw e;
  } finally {
    ctx.store.mode = { kind: 'direct' };
    ctx.making = { kind: 'direct' };
  }
  unlinkSync(proposalFile(ctx, id));
  const approvers = [...new Set(Object.values(p.approvals).flatMap((l) => l.map((a) => a.approver)))];
  let highWater = 'recorded on every HSM';
  try {
    if (claims.length > 0) onEveryHsm(ctx, (t) => recordMarks(t, claims));
  } catch (e) {
    // Written already: the proxy records the states itself when it loads them (within their expiry).
    highWater = `not recorded (${(e as Error).message}); the proxy records it when it loads the config`;
  }
  const epochs = claims.map((c) => `${c.group}:${c.epoch}`).join(' ');
  ctx.audit({ action: 'change-apply', change: id, by: as, command: p.command.join(' '), approvers: approvers.join(' '), proposedBy: p.proposedBy, epochs, highWater });
  return { change: id, applied: p.command.join(' '), approvers, epochs, highWater, result: out };
}

const replayOf = (p: Proposal): Making => ({ kind: 'replay', made: p.made ?? nothingMade() });

/**
 * Before a change is applied: every check value its proposal sealed opens on each HSM that holds the version (as
 * the change places it), so that what the approvers signed is the key material of these HSMs.
 */
function checkMadeOnHsms(ctx: AdminContext, made: Made | undefined, after: ProxyConfig): void {
  const placement = new Map(after.groups.flatMap((g) => g.keys.flatMap((k) => (k.versions ?? []).map((v) => [v.label, v.hsms] as const))));
  for (const [label, k] of Object.entries(made?.keys ?? {})) {
    withHolders(ctx, placement.get(label), (holders) => openOnEach(holders, label, k.objectId, k.checkValue));
  }
}

/** Drops a pending change: the HSM keys and secret files its proposal made (and the store does not use) go with it. */
export function withdrawChange(ctx: AdminContext, id: string, as: string): object {
  const p = readProposal(ctx, id);
  const gone = discardMade(ctx, p.made ?? nothingMade());
  unlinkSync(proposalFile(ctx, id));
  ctx.audit({ action: 'change-withdraw', change: id, by: as, command: p.command.join(' '), keysDestroyed: gone.keys.join(' '), secretsRemoved: gone.files.length });
  return { change: id, withdrawn: p.command.join(' '), destroyed: gone.keys, secretsRemoved: gone.files.length };
}

export function listChanges(ctx: AdminContext): object[] {
  if (!existsSync(changesDir(ctx))) return [];
  return readdirSync(changesDir(ctx))
    .filter((f) => f.endsWith('.json'))
    .map((f) => readProposal(ctx, f.slice(0, -5)))
    .map((p) => ({ id: p.id, proposedBy: p.proposedBy, proposedAt: p.proposedAt, expiresAt: p.expiresAt, command: p.command.join(' '), groups: p.groups, approvals: Object.fromEntries(Object.entries(p.approvals).map(([g, l]) => [g, l.map((a) => a.approver)])) }));
}

export function showChange(ctx: AdminContext, id: string): Proposal {
  return readProposal(ctx, id);
}

/** An Ed25519 key pair for an administrator: the private key to a 0600 file, the public key printed for the config. */
export function adminKeygen(out: string): object {
  const k = generateApproverKey();
  writeFileSync(out, k.privateKeyPem, { mode: 0o600, flag: 'wx' });
  return { privateKeyFile: out, publicKey: k.publicKey };
}

/** Adds an administrator. This changes the governance root, so a pinned proxy refuses it until the pin lists the new root. */
export function addAdministrator(ctx: AdminContext, name: string, role: string, publicKey: string): object {
  const next = ctx.store.update((doc, config) => {
    if (config.governance.administrators.some((a) => a.name === name)) throw new ConfigError(`administrator "${name}" exists`);
    if (!doc.hasIn(['governance', 'administrators'])) doc.setIn(['governance', 'administrators'], doc.createNode([]));
    doc.addIn(['governance', 'administrators'], doc.createNode({ name, role, publicKey }));
  });
  ctx.audit({ action: 'administrator-add', administrator: name, role });
  return { added: name, role, governanceRoot: governanceRootHash(next.config) };
}

/** Protects a group (or changes its quorum), recording in the same change its keys' check values and its key stores' identities. */
export function setQuorum(ctx: AdminContext, group: string, approvals: number, approvers: string[]): object {
  let recorded = {};
  ctx.store.update((doc, config) => {
    doc.setIn(['groups', groupIndex(config, group), 'quorum'], doc.createNode({ approvals, approvers }));
    recorded = recordGroup(ctx, doc, config, group);
  });
  ctx.audit({ action: 'group-set-quorum', group, approvals, approvers: approvers.join(' ') });
  return { group, quorum: { approvals, approvers }, recorded };
}

/** The value to pin in XKS_GOVERNANCE_TRUST for this config (read without the governance check). */
export function governancePin(ctx: AdminContext, doc: unknown, build: (d: unknown) => ProxyConfig): object {
  const config = build(doc);
  return {
    governanceRoot: governanceRootHash(config),
    administrators: config.governance.administrators.map((a) => `${a.name}:${a.role}`),
    quorums: config.groups.filter((g) => g.quorum).map((g) => ({ group: g.name, ...g.quorum, epoch: g.revision?.epoch ?? 0, stateHash: groupStateHash(config, g) })),
    configFile: ctx.configFile,
  };
}
