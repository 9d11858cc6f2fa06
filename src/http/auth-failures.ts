import { XksError } from '../errors';
import type { AuthFailureKind, SigV4Failure } from '../sigv4/verify';

/**
 * The one message every SigV4 refusal carries: the answer must not tell an unauthenticated caller
 * whether an access key id exists, or which check failed. The detail goes to the log only.
 */
export const AUTH_FAILED_MESSAGE = 'SigV4 authentication failed';

/** Client-chosen text (a header name) can appear in a reason; the log keeps a bounded prefix. */
const MAX_DETAIL = 160;

export class AuthenticationFailed extends XksError {
  readonly kind: AuthFailureKind;
  readonly detail: string;

  constructor(failure: SigV4Failure) {
    super('AuthenticationFailedException', AUTH_FAILED_MESSAGE);
    this.kind = failure.kind;
    this.detail = failure.reason.length > MAX_DETAIL ? `${failure.reason.slice(0, MAX_DETAIL)}...` : failure.reason;
  }
}
