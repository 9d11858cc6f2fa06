import { readFileSync } from 'node:fs';
import type { GroupConfig, ProxyConfig } from '../config/schema';
import { parsePublicKey, verifyApproval } from './signatures';
import { governanceRootHash, groupStateHash } from './state';

/**
 * Why governance refused a config: missing approvals, a root that is not pinned, a state older than the newest
 * accepted, approvals that expired before their state was first accepted, the newest accepted states not
 * readable or recordable in the HSMs, an HSM key named by a second key entry, or a secret that is not the one a
 * protected key store's credential records.
 */
export const REFUSAL_REASONS = ['quorum', 'trust-root', 'rollback', 'expired', 'high-water', 'key-owner', 'secret'] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/** A config refused by governance: counted and audited apart from a merely malformed file. */
export class GovernanceError extends Error {
  constructor(
    message: string,
    readonly reason: RefusalReason,
    readonly group?: string,
  ) {
    super(message);
    this.name = 'GovernanceError';
  }
}

/** Roles whose signature counts towards a quorum; auditors only read. */
const SIGNING_ROLES = new Set(['administrator', 'approver']);

/**
 * The pinned governance roots: XKS_GOVERNANCE_TRUST (comma-separated hex), or a file (a mounted Secret)
 * named by XKS_GOVERNANCE_TRUST_FILE. Several values let a new root be rolled out before the config
 * that needs it. Undefined when neither is set.
 */
export function pinnedRoots(env: NodeJS.ProcessEnv): Set<string> | undefined {
  let text = env.XKS_GOVERNANCE_TRUST;
  if (!text && env.XKS_GOVERNANCE_TRUST_FILE) {
    try {
      text = readFileSync(env.XKS_GOVERNANCE_TRUST_FILE, 'utf8');
    } catch (e) {
      throw new GovernanceError(`cannot read XKS_GOVERNANCE_TRUST_FILE (${(e as NodeJS.ErrnoException).code ?? 'error'})`, 'trust-root');
    }
  }
  if (!text) return undefined;
  const roots = text.split(/[\s,]+/).filter(Boolean).map((r) => r.toLowerCase());
  for (const r of roots) if (!/^[0-9a-f]{64}$/.test(r)) throw new GovernanceError('XKS_GOVERNANCE_TRUST holds a value that is not a SHA-256 hex digest', 'trust-root');
  return new Set(roots);
}

/**
 * While the pin holds several roots (a root change in progress) a config under any of them is accepted, so
 * the old root's administrators and quorums still count: a warning for the log, undefined otherwise.
 */
export function pinWarning(env: NodeJS.ProcessEnv): string | undefined {
  const size = pinnedRoots(env)?.size ?? 0;
  if (size < 2) return undefined;
  return `XKS_GOVERNANCE_TRUST pins ${size} governance roots: a config under any of them is accepted, so an old root's administrators and weaker quorums still count; remove the old root once the root change is done`;
}

/** Whether a signature by `name` can count towards the quorum of `groupName` in this config. */
export function countsTowardsQuorum(config: ProxyConfig, groupName: string, name: string): boolean {
  const admin = config.governance.administrators.find((a) => a.name === name);
  const quorum = config.groups.find((g) => g.name === groupName)?.quorum;
  return admin !== undefined && SIGNING_ROLES.has(admin.role) && quorum !== undefined && quorum.approvers.includes(name);
}

/** Approvers whose valid signature over the group's current state is present (each counted once). */
function validApprovers(config: ProxyConfig, group: GroupConfig, stateHash = groupStateHash(config, group)): string[] {
  if (!group.quorum) return [];
  const admins = new Map(config.governance.administrators.map((a) => [a.name, a]));
  const ok = new Set<string>();
  for (const a of group.approvals ?? []) {
    const admin = admins.get(a.approver);
    if (!admin || !countsTowardsQuorum(config, group.name, a.approver)) continue;
    if (verifyApproval(parsePublicKey(admin.publicKey), group.name, stateHash, a.signature)) ok.add(a.approver);
  }
  return [...ok];
}

/**
 * Refuses a config whose governance root is not the pinned one, or whose quorum-protected groups lack
 * M valid approvals over their current state. Runs on every load and reload, in the proxy and in
 * xks-admin alike; request handling never waits on it.
 */
export function verifyGovernance(config: ProxyConfig, env: NodeJS.ProcessEnv): void {
  const pinned = pinnedRoots(env);
  const protectedGroups = config.groups.filter((g) => g.quorum);
  const root = governanceRootHash(config);
  if (pinned === undefined) {
    if (protectedGroups.length > 0) {
      throw new GovernanceError(`quorum policies need a pinned governance root: set XKS_GOVERNANCE_TRUST=${root} (see xks-admin governance pin)`, 'trust-root');
    }
    return;
  }
  if (!pinned.has(root)) {
    throw new GovernanceError(`governance root ${root} (administrators and quorum policies) is not the pinned one: approvers and quorums change only with XKS_GOVERNANCE_TRUST`, 'trust-root');
  }
  for (const g of protectedGroups) {
    const have = validApprovers(config, g);
    if (have.length < g.quorum!.approvals) {
      throw new GovernanceError(
        `group "${g.name}" is quorum-protected: its state ${groupStateHash(config, g).slice(0, 16)}... has ${have.length} valid approval(s), needs ${g.quorum!.approvals} (xks-admin change propose/approve/apply)`,
        'quorum',
        g.name,
      );
    }
  }
}

/** Checks that quorums name signing administrators; a schema-level fact, reported like other config errors. */
export function checkGovernanceReferences(config: ProxyConfig): string | undefined {
  const admins = new Map(config.governance.administrators.map((a) => [a.name, a]));
  for (const a of config.governance.administrators) {
    try {
      parsePublicKey(a.publicKey);
    } catch {
      return `governance.administrators: "${a.name}" has no valid Ed25519 public key (base64 SPKI DER)`;
    }
  }
  for (const g of config.groups) {
    for (const name of g.quorum?.approvers ?? []) {
      const admin = admins.get(name);
      if (!admin) return `groups "${g.name}".quorum: no administrator named "${name}"`;
      if (!SIGNING_ROLES.has(admin.role)) return `groups "${g.name}".quorum: "${name}" is an ${admin.role}, who cannot approve`;
    }
  }
  return undefined;
}
