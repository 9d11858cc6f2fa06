import { XksError, type XksErrorName } from '../errors';
import { effectiveStatus, KeyRuntime, KeyStoreRuntime } from '../config/load';
import { Decision, evaluate } from '../policy/evaluate';
import type { RequestMetadata } from './requests';

/** What a key operation needs its key to allow: existence and policy only, or also every usage listed. */
export type KeyNeed = 'exists' | readonly ('ENCRYPT' | 'DECRYPT')[];

/** A key found and its group's policy evaluated: what the request log and audit record (group, rule). */
export interface Authorization {
  readonly key: KeyRuntime;
  readonly decision: Decision;
}

/** What authorization grants an operation: its key, or nothing for an operation on no key (GetHealthStatus). */
export type Grant = Authorization | undefined;

/** A refusal after the key's policy was evaluated: the audit still names the group and the deciding rule. */
export class KeyRefused extends XksError {
  constructor(
    errorName: XksErrorName,
    message: string,
    readonly authorization: Authorization,
  ) {
    super(errorName, message);
  }
}

/**
 * Finds the key and applies its group's policy, then checks its state and usage. The order is the
 * spec's: KeyNotFound, AccessDenied, InvalidState, InvalidKeyUsage.
 */
export function authorizeKey(keyStore: KeyStoreRuntime, keyId: string, metadata: RequestMetadata, need: KeyNeed): Authorization {
  const key = keyStore.keys.get(keyId);
  if (!key) throw new XksError('KeyNotFoundException', `external key ${keyId} is not found in this key store`);
  const decision = evaluate(key.group.rules, metadata);
  const authorization: Authorization = { key, decision };
  if (!decision.allowed) {
    throw new KeyRefused('AccessDeniedException', `denied by rule "${decision.rule}" of group "${key.group.name}"`, authorization);
  }
  if (need === 'exists') return authorization;
  if (effectiveStatus(key) !== 'ENABLED') {
    const why = key.pendingDeletion ? 'is pending deletion' : key.status !== 'ENABLED' ? 'is disabled' : `is in disabled group ${key.group.name}`;
    throw new KeyRefused('InvalidStateException', `external key ${key.id} ${why}`, authorization);
  }
  const missing = need.find((u) => !key.usage.has(u));
  if (missing !== undefined) {
    const why = need.length > 1 ? ` (this request needs ${need.join(' and ')})` : '';
    throw new KeyRefused('InvalidKeyUsageException', `external key ${key.id} does not allow ${missing}${why}`, authorization);
  }
  return authorization;
}
