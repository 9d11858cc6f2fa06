import { ALGORITHM, canonicalValue, SERVICE, sha256Hex, signatureOf, stringToSign } from './verify';

/**
 * SigV4 signing for the proxy's own requests (the request-path warm-up), on node:crypto and on the
 * verifier's canonicalisation, so that a runtime install needs no signing library. Tests keep aws4 as
 * the independent signer, and check this one against it (test/unit/sigv4-sign.test.ts).
 */

export interface SignableRequest {
  method: string;
  /** The Host header as sent (host[:port]). */
  host: string;
  /** Only unreserved characters, as the router admits: the path is its own canonical form. */
  path: string;
  body: Buffer | string;
  /** Further headers to send and sign (content-type, content-length, ...). */
  headers?: Readonly<Record<string, string>>;
}

export interface SigningCredential {
  accessKeyId: string;
  secret: Buffer;
}

/** X-Amz-Date for a time: YYYYMMDDTHHMMSSZ. */
export function amzDate(ms: number): string {
  return new Date(ms).toISOString().replace(/[:-]|\.\d{3}/g, '');
}

/** Returns the headers to send: the given ones (names lower-cased), host, x-amz-date and authorization; all but authorization are signed. */
export function signRequest(req: SignableRequest, credential: SigningCredential, region: string, now: number = Date.now()): Record<string, string> {
  const date = amzDate(now);
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers ?? {})) headers[name.toLowerCase()] = value;
  headers.host = req.host;
  headers['x-amz-date'] = date;
  const names = Object.keys(headers).sort();
  let canonicalHeaders = '';
  for (const name of names) canonicalHeaders += `${name}:${canonicalValue(headers[name] as string)}\n`;
  const signedHeaders = names.join(';');
  const toSign = stringToSign(req.method, req.path, canonicalHeaders, signedHeaders, sha256Hex(req.body), date, region);
  const signature = signatureOf(credential.accessKeyId, credential.secret, date.slice(0, 8), region, toSign).toString('hex');
  headers.authorization = `${ALGORITHM} Credential=${credential.accessKeyId}/${date.slice(0, 8)}/${region}/${SERVICE}/aws4_request, SignedHeaders=${signedHeaders}, Signature=${signature}`;
  return headers;
}
