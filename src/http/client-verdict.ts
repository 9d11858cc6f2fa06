import type { X509Certificate } from 'node:crypto';

/**
 * Whether an mTLS client may in: its chain (OpenSSL's verdict, as Node reports it) and its identity
 * (server.tls.allowedClientSubjects). The reason is a small fixed set, fit for a metric label; the
 * detail (OpenSSL's code, the names presented) is for the log. The client itself is told neither.
 */
export type ClientRefusal =
  | 'no_certificate'
  | 'expired'
  | 'not_yet_valid'
  | 'self_signed'
  | 'unknown_ca'
  | 'revoked'
  | 'wrong_purpose'
  | 'invalid_certificate'
  | 'subject_not_allowed';

export type ClientVerdict = { ok: true } | { ok: false; reason: ClientRefusal; detail: string };

export interface PresentedClient {
  /** Node's socket.authorized: the chain verified against clientCaFile. */
  authorized: boolean;
  /** Node's socket.authorizationError: OpenSSL's verify code as a name (typed as Error, given as a string). */
  authorizationError?: unknown;
  /** The leaf certificate, if the client sent one. */
  certificate?: X509Certificate;
}

/** OpenSSL verify codes (as Node names them) by refusal reason; any other code is invalid_certificate. */
const CHAIN_REASONS: Record<string, ClientRefusal> = {
  CERT_HAS_EXPIRED: 'expired',
  CERT_NOT_YET_VALID: 'not_yet_valid',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'self_signed',
  SELF_SIGNED_CERT_IN_CHAIN: 'self_signed',
  UNABLE_TO_GET_ISSUER_CERT: 'unknown_ca',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'unknown_ca',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'unknown_ca',
  INVALID_CA: 'unknown_ca',
  CERT_CHAIN_TOO_LONG: 'unknown_ca',
  PATH_LENGTH_EXCEEDED: 'unknown_ca',
  CERT_REVOKED: 'revoked',
  INVALID_PURPOSE: 'wrong_purpose',
};

/**
 * DNS names as a TLS client checks a server's: subjectAltName DNS entries, a wildcard standing for one
 * whole leftmost label; the subject CN only when the certificate has no DNS name in subjectAltName.
 */
const HOST_CHECK = { subject: 'default', wildcards: true, partialWildcards: false, multiLabelWildcards: false, singleLabelSubdomains: false } as const;

export function judgeClient(client: PresentedClient, allowedSubjects: readonly string[]): ClientVerdict {
  const cert = client.certificate;
  if (!cert) return { ok: false, reason: 'no_certificate', detail: 'no client certificate' };
  if (!client.authorized) {
    const code = String(client.authorizationError);
    return { ok: false, reason: CHAIN_REASONS[code] ?? 'invalid_certificate', detail: code };
  }
  if (allowedSubjects.length === 0 || allowedSubjects.some((name) => cert.checkHost(name, HOST_CHECK) !== undefined)) return { ok: true };
  return { ok: false, reason: 'subject_not_allowed', detail: presentedNames(cert) };
}

/** What the certificate names, for the log: its subjectAltName, or its subject when it has none. */
function presentedNames(cert: X509Certificate): string {
  // Node gives an empty subject as undefined, whatever the typings say.
  return cert.subjectAltName ? `subjectAltName ${cert.subjectAltName}` : `subject ${(cert.subject ?? '').replace(/\n/g, ', ')}`;
}
