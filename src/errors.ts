/**
 * The XKS Proxy API error names (spec "Error codes" table) and their HTTP status.
 * This table is the only place where an error name is mapped to a status code.
 */
export const XKS_ERROR_STATUS = {
  ValidationException: 400,
  InvalidStateException: 400,
  InvalidCiphertextException: 400,
  InvalidKeyUsageException: 400,
  AuthenticationFailedException: 401,
  AccessDeniedException: 403,
  KeyNotFoundException: 404,
  InvalidUriPathException: 404,
  ThrottlingException: 429,
  InternalException: 500,
  UnsupportedOperationException: 501,
  DependencyTimeoutException: 503,
} as const;

export type XksErrorName = keyof typeof XKS_ERROR_STATUS;

/** Errors KMS may retry (it counts them apart in XksProxyErrors). */
export const RETRYABLE_ERRORS: ReadonlySet<XksErrorName> = new Set<XksErrorName>([
  'ThrottlingException',
  'InternalException',
  'DependencyTimeoutException',
]);

const MAX_MESSAGE = 511;

/** The spec allows only printable ASCII (0x20-0x7e) and fewer than 512 characters. */
function sanitizeMessage(message: string): string {
  const printable = message.replace(/[^\x20-\x7e]/g, '?');
  return printable.length > MAX_MESSAGE ? printable.slice(0, MAX_MESSAGE - 3) + '...' : printable;
}

export class XksError extends Error {
  readonly errorName: XksErrorName;
  readonly status: number;

  constructor(errorName: XksErrorName, message: string) {
    // A spec error is an answer, not a fault: nothing reads its stack, and capturing one was 5% of
    // the proxy's CPU while it shed load (bench --mode overload --cpu-prof).
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      super(sanitizeMessage(message));
    } finally {
      Error.stackTraceLimit = limit;
    }
    this.name = 'XksError';
    this.errorName = errorName;
    this.status = XKS_ERROR_STATUS[errorName];
  }

  toBody(): { errorName: XksErrorName; errorMessage: string } {
    return { errorName: this.errorName, errorMessage: this.message };
  }
}

export function isXksError(e: unknown): e is XksError {
  return e instanceof XksError;
}
