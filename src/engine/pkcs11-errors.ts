/** How a PKCS#11 return value is handled. Kept in one table so vendors' quirks live in one place. */
export type FaultClass =
  /** Login or device gone: reconnect the whole module. */
  | 'connection'
  /**
   * One session gone (an HA group that lost the member holding it answers CKR_SESSION_HANDLE_INVALID
   * intermittently): replace it, and retry the operation once. A replacement that is not logged in means
   * the login is gone with it, and the connection is reconnected.
   */
  | 'session'
  /** A cached object handle went stale: look the key up again. */
  | 'handle'
  /** Anything else: the operation failed; the session is replaced to be safe. */
  | 'operation';

const SESSION = new Set(['CKR_SESSION_HANDLE_INVALID', 'CKR_SESSION_CLOSED']);

const CONNECTION = new Set([
  'CKR_SESSION_COUNT',
  'CKR_DEVICE_REMOVED',
  'CKR_DEVICE_ERROR',
  'CKR_DEVICE_MEMORY',
  'CKR_TOKEN_NOT_PRESENT',
  'CKR_TOKEN_NOT_RECOGNIZED',
  'CKR_USER_NOT_LOGGED_IN',
  'CKR_CRYPTOKI_NOT_INITIALIZED',
  'CKR_SLOT_ID_INVALID',
  'CKR_PIN_EXPIRED',
]);

const HANDLE = new Set(['CKR_KEY_HANDLE_INVALID', 'CKR_OBJECT_HANDLE_INVALID']);

/** Return values that mean "the tag did not verify" on every module; SoftHSM2 adds CKR_GENERAL_ERROR (calibrated at connect). */
export const STANDARD_TAG_FAILURES: readonly string[] = ['CKR_ENCRYPTED_DATA_INVALID', 'CKR_ENCRYPTED_DATA_LEN_RANGE'];

/** The CKR_ name of a pkcs11js error, or undefined for non-PKCS#11 errors. */
export function ckrName(e: unknown): string | undefined {
  if (e && typeof e === 'object' && 'message' in e) {
    const m = /^(CKR_[A-Z0-9_]+)/.exec(String((e as Error).message));
    if (m) return m[1];
  }
  return undefined;
}

/**
 * Return values at connect that no retry will fix: the operator has to change the configuration or the
 * HSM. The engine still retries them (slowly), since the fix may come without a restart.
 */
const MISCONFIGURATION = new Set([
  'CKR_ARGUMENTS_BAD',
  'CKR_MECHANISM_INVALID',
  'CKR_MECHANISM_PARAM_INVALID',
  'CKR_PIN_INCORRECT',
  'CKR_PIN_INVALID',
  'CKR_PIN_LEN_RANGE',
  'CKR_PIN_LOCKED',
  'CKR_USER_TYPE_INVALID',
  'CKR_KEY_TYPE_INCONSISTENT',
  'CKR_KEY_FUNCTION_NOT_PERMITTED',
]);

export function isMisconfiguration(e: unknown): boolean {
  const name = ckrName(e);
  return name !== undefined && MISCONFIGURATION.has(name);
}

/** For logs and readiness: the PKCS#11 call and its return value (or the message), never data. */
export function describeFailure(e: unknown): string {
  const name = ckrName(e);
  if (name === undefined) return e instanceof Error ? e.message : String(e);
  const method = (e as { method?: unknown }).method;
  return typeof method === 'string' && method !== '' ? `${method} returned ${name}` : name;
}

export function classify(e: unknown): FaultClass {
  const name = ckrName(e);
  if (name && CONNECTION.has(name)) return 'connection';
  if (name && SESSION.has(name)) return 'session';
  if (name && HANDLE.has(name)) return 'handle';
  return 'operation';
}
