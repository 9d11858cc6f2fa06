import type { GroupConfig, ProxyConfig } from '../config/schema';
import { canonicalJson, sha256Hex } from './canonical';

/**
 * What a quorum protects in one group: everything that decides who may use its keys and how (policy,
 * status, keys with status/usage/versions/labels/object ids/deletion/rotation, the key stores that reach
 * it, the quorum policy itself) and where the state sits in its history (revision), after defaults are
 * applied. The approvals are left out: they sign this. A state written before revisions existed hashes
 * as it did then (an absent member is dropped), so its approvals stay valid across the upgrade.
 */
export function groupState(config: ProxyConfig, group: GroupConfig): unknown {
  const { approvals: _signatures, ...rest } = group;
  return {
    v: 1,
    group: rest,
    keyStores: config.keyStores.filter((ks) => ks.groups.includes(group.name)).map((ks) => ks.name).sort(),
  };
}

export function groupStateHash(config: ProxyConfig, group: GroupConfig): string {
  return sha256Hex(canonicalJson(groupState(config, group)));
}

/** The state without its revision: whether a change alters what the group allows, not just where it sits in history. */
export function groupContentHash(config: ProxyConfig, group: GroupConfig): string {
  const { revision: _revision, ...rest } = group;
  return groupStateHash(config, rest);
}

/** The default life of a proposal and its approvals when governance.approvalTtlHours is not set. */
export const DEFAULT_APPROVAL_TTL_HOURS = 72;

/**
 * The governance root: the administrators and every group's quorum policy. Its hash is pinned outside
 * the config (XKS_GOVERNANCE_TRUST), so whoever can write the config can neither add approvers, swap
 * their keys, lower a quorum nor drop one.
 */
export function governanceRoot(config: ProxyConfig): unknown {
  return {
    v: 1,
    administrators: [...config.governance.administrators].sort((a, b) => (a.name < b.name ? -1 : 1)),
    quorums: config.groups
      .filter((g) => g.quorum)
      .map((g) => ({ group: g.name, approvals: g.quorum!.approvals, approvers: [...g.quorum!.approvers].sort() }))
      .sort((a, b) => (a.group < b.group ? -1 : 1)),
    // Only when set, so that roots pinned before the setting existed still match.
    approvalTtlHours: config.governance.approvalTtlHours,
  };
}

export function governanceRootHash(config: ProxyConfig): string {
  return sha256Hex(canonicalJson(governanceRoot(config)));
}
