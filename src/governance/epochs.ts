import type { ProxyConfig } from '../config/schema';
import { GovernanceError } from './quorum';
import { groupStateHash } from './state';

/** A quorum-protected group's state as a config presents it: where it sits in its history, and its hash. */
export interface Claim {
  group: string;
  /** 0 for a state written before revisions existed. */
  epoch: number;
  state: string;
  previous?: string;
  expiresAt?: string;
}

/** One acceptance, as recorded in an HSM: the group's state at an epoch. */
export interface Mark {
  group: string;
  epoch: number;
  state: string;
}

export function claimsOf(config: ProxyConfig): Claim[] {
  return config.groups
    .filter((g) => g.quorum)
    .map((g) => ({ group: g.name, epoch: g.revision?.epoch ?? 0, state: groupStateHash(config, g), previous: g.revision?.previous, expiresAt: g.revision?.expiresAt }));
}

const short = (hash: string): string => `${hash.slice(0, 16)}...`;

/**
 * Judges each claimed state against the acceptances recorded so far (merged from every HSM that answered):
 * - below the newest recorded epoch: a rollback, refused;
 * - at the newest epoch: only the very state recorded there (another one would be a fork), accepted as it is;
 * - above it: a change, acceptable while its approvals have not expired, only as the next epoch, naming the newest
 *   recorded state as its predecessor. A state further ahead is refused: its chain back to the newest recorded
 *   state cannot be checked, and a branch forked from an older state (a sibling proposal the quorum approved
 *   but never applied, then built on by approvers who were shown a store the writer planted) would pass.
 *   `change apply` records a store's state before it builds on it, so an approved history has no gaps.
 * A group with nothing recorded is accepted as it is: the first acceptance (after an upgrade, a state without a
 * revision is epoch 0). Returns the claims that must be recorded before the config is accepted; throws
 * GovernanceError otherwise.
 */
export function judgeClaims(claims: readonly Claim[], marks: readonly Mark[], now: Date): Claim[] {
  const record: Claim[] = [];
  for (const c of claims) {
    const mine = marks.filter((m) => m.group === c.group);
    if (mine.length === 0) {
      record.push(c);
      continue;
    }
    const top = Math.max(...mine.map((m) => m.epoch));
    const atTop = new Set(mine.filter((m) => m.epoch === top).map((m) => m.state));
    const refuse = (why: string, reason: 'rollback' | 'expired' = 'rollback'): never => {
      throw new GovernanceError(`group "${c.group}": ${why}`, reason, c.group);
    };
    if (c.epoch < top) refuse(`state epoch ${c.epoch} is older than the newest accepted (epoch ${top}): a state is never rolled back (restore the newest config, or propose the change again)`);
    if (c.epoch === top) {
      if (!atTop.has(c.state)) refuse(`state ${short(c.state)} is not the one accepted at epoch ${top}`);
      continue;
    }
    if (c.expiresAt !== undefined && now.getTime() > Date.parse(c.expiresAt)) {
      refuse(`the approvals of state epoch ${c.epoch} expired at ${c.expiresAt} before the proxy first accepted it (propose the change again)`, 'expired');
    }
    if (c.epoch > top + 1) {
      refuse(`state epoch ${c.epoch} is not the next after the newest accepted (epoch ${top}): each state follows the accepted one directly (load the approved configs in turn, or propose the change again)`);
    }
    if (c.previous === undefined || !atTop.has(c.previous)) {
      refuse(`state epoch ${c.epoch} follows ${c.previous === undefined ? 'no recorded state' : short(c.previous)}, not the state accepted at epoch ${top}`);
    }
    record.push(c);
  }
  return record;
}
