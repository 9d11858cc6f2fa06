/** How a PKCS#11 return value is handled. Kept in one table so vendors' quirks live in one place. */
export type FaultClass =
  /** Session, login or device gone: reconnect the whole module. */
  | 'connection'
  /** A cached object handle went stale: look the key up again. */
  | 'handle'
  /** Anything else: the operation failed; the session is replaced to be safe. */
  | 'operation';

const CONNECTION = new Set([
  'CKR_SESSION_HANDLE_INVALID',
  'CKR_SESSION_CLOSED',
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

export function classify(e: unknown): FaultClass {
  const name = ckrName(e);
  if (name && CONNECTION.has(name)) return 'connection';
  if (name && HANDLE.has(name)) return 'handle';
  return 'operation';
}
