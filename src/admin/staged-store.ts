import type { Document } from 'yaml';
import { buildRuntimeConfig, RuntimeConfig } from '../config/load';
import type { ProxyConfig } from '../config/schema';
import { DEFAULT_APPROVAL_TTL_HOURS, groupContentHash, groupStateHash } from '../governance/state';
import { Commit, ConfigStore, groupIndex } from '../store/config-store';

export interface Approval {
  approver: string;
  signature: string;
}

/**
 * How an admin command reaches the store: `direct` writes (and is refused by the quorum check for a
 * protected group); `dry-run` computes the state a change would produce and writes nothing, touches no
 * HSM (a proposal); `apply` writes the change together with the approvals collected for it.
 */
export type StoreMode = { kind: 'direct' } | { kind: 'dry-run' } | { kind: 'apply'; approvals: Record<string, Approval[]> };

/** Thrown out of a dry run, carrying the configuration the change would have produced. */
export class StagedChange extends Error {
  constructor(readonly config: ProxyConfig) {
    super('staged change (dry run)');
  }
}

/**
 * Each protected group whose content the change alters gets its next revision: epoch + 1, the hash of the state
 * it replaces, and when its approvals expire (counted from `now`, the proposal's time, so that approvers and
 * apply reproduce it). The approvals then sign the revision with the rest, so none of it can be edited later.
 */
function stampRevisions(doc: Document, before: ProxyConfig, now: Date): void {
  const after = buildRuntimeConfig(doc.toJS(), process.env, { quorum: false }).config;
  const ttlMs = (after.governance.approvalTtlHours ?? DEFAULT_APPROVAL_TTL_HOURS) * 3_600_000;
  after.groups.forEach((g, i) => {
    if (!g.quorum) return;
    const old = before.groups.find((b) => b.name === g.name);
    if (old?.quorum && groupContentHash(before, old) === groupContentHash(after, g)) return;
    const revision = { epoch: (old?.revision?.epoch ?? 0) + 1, previous: old ? groupStateHash(before, old) : undefined, expiresAt: new Date(now.getTime() + ttlMs).toISOString() };
    doc.setIn(['groups', i, 'revision'], doc.createNode(revision));
  });
}

export class GovernedStore extends ConfigStore {
  mode: StoreMode = { kind: 'direct' };

  constructor(
    file: string,
    private readonly now: () => Date,
  ) {
    super(file);
  }

  override update(change: (doc: Document, config: ProxyConfig) => void, commit?: Commit): RuntimeConfig {
    const mode = this.mode;
    if (mode.kind === 'direct') return super.update(change, commit);
    return super.update(
      (doc, config) => {
        change(doc, config);
        stampRevisions(doc, config, this.now());
        if (mode.kind === 'dry-run') {
          // Validated like a real change except for the approvals it is about to collect.
          throw new StagedChange(buildRuntimeConfig(doc.toJS(), process.env, { quorum: false }).config);
        }
        const next = buildRuntimeConfig(doc.toJS(), process.env, { quorum: false }).config;
        for (const [group, approvals] of Object.entries(mode.approvals)) {
          doc.setIn(['groups', groupIndex(next, group), 'approvals'], doc.createNode(approvals));
        }
      },
      commit,
    );
  }
}
