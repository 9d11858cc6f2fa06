/**
 * Failures the engine reports, in its own terms. The XKS layer maps them to spec error names in one
 * place (src/xks/engine-errors.ts); the engine never decides what KMS is told.
 */
export type EngineErrorKind =
  /** No HSM object carries the key version's label. */
  | 'key-not-found'
  /** The object exists but must not be used: not AES-256, extractable, not sensitive, or its label is ambiguous. */
  | 'key-unusable'
  /** AES-GCM authentication failed: wrong key, IV, AAD, ciphertext or tag. */
  | 'tag-mismatch'
  /** No working connection to the HSM (down, reconnecting, or misconfigured). */
  | 'unavailable'
  /** Too much work already waiting for an HSM session. */
  | 'busy'
  /** The HSM failed the operation, or returned something impossible. */
  | 'device';

export class EngineError extends Error {
  constructor(
    readonly kind: EngineErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'EngineError';
  }
}

export function isEngineError(e: unknown): e is EngineError {
  return e instanceof EngineError;
}
