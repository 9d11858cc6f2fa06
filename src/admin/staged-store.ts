import type { Document } from 'yaml';
import { buildRuntimeConfig, RuntimeConfig } from '../config/load';
import type { ProxyConfig } from '../config/schema';
import { ConfigStore, groupIndex } from '../store/config-store';

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

export class GovernedStore extends ConfigStore {
  mode: StoreMode = { kind: 'direct' };

  override update(change: (doc: Document, config: ProxyConfig) => void, commit?: () => void): RuntimeConfig {
    const mode = this.mode;
    if (mode.kind === 'direct') return super.update(change, commit);
    return super.update(
      (doc, config) => {
        change(doc, config);
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
