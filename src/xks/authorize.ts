import { XksError } from '../errors';
import { effectiveStatus, KeyRuntime, KeyStoreRuntime } from '../config/load';
import { Decision, evaluate } from '../policy/evaluate';
import type { RequestMetadata } from './requests';

/** What a key operation needs its key to allow: existence and policy only, or also every usage listed. */
export type KeyNeed = 'exists' | readonly ('ENCRYPT' | 'DECRYPT')[];

/** Where authorization records what it found, for the request log and audit (set even when it refuses). */
export interface AuthorizationRecord {
  group?: string;
  decision?: Decision;
}

/**
 * Finds the key and applies its group's policy, then checks its state and usage. The order is the
 * spec's: KeyNotFound, AccessDenied, InvalidState, InvalidKeyUsage.
 */
export function authorizeKey(
  keyStore: KeyStoreRuntime,
  keyId: string,
  metadata: RequestMetadata,
  need: KeyNeed,
  record: AuthorizationRecord,
): KeyRuntime {
  const key = keyStore.keys.get(keyId);
  if (!key) throw new XksError('KeyNotFoundException', `external key ${keyId} is not found in this key store`);
  record.group = key.group.name;
  const decision = evaluate(key.group.rules, metadata);
  record.decision = decision;
  if (!decision.allowed) {
    throw new XksError('AccessDeniedException', `denied by rule "${decision.rule}" of group "${key.group.name}"`);
  }
  if (need === 'exists') return key;
  if (effectiveStatus(key) !== 'ENABLED') {
    const why = key.pendingDeletion ? 'is pending deletion' : key.status !== 'ENABLED' ? 'is disabled' : `is in disabled group ${key.group.name}`;
    throw new XksError('InvalidStateException', `external key ${key.id} ${why}`);
  }
  const missing = need.find((u) => !key.usage.has(u));
  if (missing !== undefined) {
    const why = need.length > 1 ? ` (this request needs ${need.join(' and ')})` : '';
    throw new XksError('InvalidKeyUsageException', `external key ${key.id} does not allow ${missing}${why}`);
  }
  return key;
}
