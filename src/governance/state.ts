import type { GroupConfig, KeyStoreConfig, ProxyConfig } from '../config/schema';
import { createHash } from 'node:crypto';
import { canonicalJson, sha256Hex } from './canonical';

/**
 * The SHA-256 (hex) of a SigV4 secret as the proxy resolves it. A secret of xks-admin's is 256 random bits: its
 * digest confirms a guess of the whole secret and nothing else (it is no SigV4 signing key: SigV4's first HMAC key
 * is "AWS4" + secret, and HMAC hashes a key longer than its block into SHA-256("AWS4" + secret), never this).
 */
export function secretSha256(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/**
 * Whether a key store's identity is recorded: once any of its credentials carries the SHA-256 of its secret
 * (xks-admin key-store record, or a credential added to a recorded store). Its identity is then part of the state
 * of every protected group it reaches; before (a deployment upgraded from a release without it), its name only.
 */
export function identityRecorded(ks: KeyStoreConfig): boolean {
  return ks.credentials.some((c) => c.secretSha256 !== undefined);
}

/**
 * What a key store is to the groups it reaches: where KMS finds it, whether it serves, the regions it takes, and
 * who can sign for it (access key ids, and each secret's SHA-256, which the proxy checks against the secret it
 * resolves, so that approvers sign credentials without holding them). Its quota is left out (it can only refuse).
 */
function keyStoreIdentity(ks: KeyStoreConfig): unknown {
  return {
    name: ks.name,
    pathPrefix: ks.pathPrefix,
    status: ks.status,
    regions: [...ks.regions].sort(),
    credentials: ks.credentials.map((c) => ({ accessKeyId: c.accessKeyId, secretSha256: c.secretSha256 })).sort((a, b) => (a.accessKeyId < b.accessKeyId ? -1 : 1)),
  };
}

/**
 * What a quorum protects in one group: everything that decides who may use its keys and how (policy,
 * status, keys with status/usage/versions/labels/object ids/check values/deletion/rotation, the key stores that
 * reach it, with their identity once recorded, the quorum policy itself) and where the state sits in its history
 * (revision), after defaults are applied. The approvals are left out: they sign this. A state written before a
 * member existed hashes as it did then (an absent member is dropped; a key store whose identity is not recorded
 * is its name), so its approvals stay valid across the upgrade.
 */
export function groupState(config: ProxyConfig, group: GroupConfig): unknown {
  const { approvals: _signatures, ...rest } = group;
  return {
    v: 1,
    group: rest,
    keyStores: config.keyStores
      .filter((ks) => ks.groups.includes(group.name))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .map((ks) => (identityRecorded(ks) ? keyStoreIdentity(ks) : ks.name)),
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
