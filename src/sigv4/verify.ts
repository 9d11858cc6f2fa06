import { createHmac, hash, timingSafeEqual } from 'node:crypto';

/**
 * SigV4 verification for the XKS proxy (spec Appendix A).
 *
 * Signing libraries (aws4, @smithy/signature-v4) choose the signed header set themselves and trust a
 * client-sent x-amz-content-sha256; a verifier must instead rebuild the canonical request from exactly
 * the headers the client listed and the body it actually sent. That is what this module does, on node:crypto.
 */

export const SERVICE = 'kms-xks-proxy';
export const ALGORITHM = 'AWS4-HMAC-SHA256';
const AMZ_DATE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;

export interface SigV4Request {
  method: string;
  /** Path exactly as received (already restricted to unreserved characters by the router). */
  path: string;
  /** Node's rawHeaders: name, value, name, value... */
  rawHeaders: readonly string[];
  body: Buffer;
}

export interface SigV4Policy {
  /** accessKeyId -> secret */
  secrets: ReadonlyMap<string, Buffer>;
  /** Regions accepted in the scope; empty accepts any. */
  regions: ReadonlySet<string>;
  clockSkewMs: number;
  now: number;
}

/**
 * Why a request failed authentication, as a small fixed set: the auth-failure metric's label and the
 * log's category. The `reason` beside it is the detail (never a signature or a secret).
 */
export type AuthFailureKind = 'malformed' | 'scope' | 'clock_skew' | 'signed_headers' | 'unknown_access_key' | 'body_hash' | 'signature';

export type SigV4Failure = { ok: false; kind: AuthFailureKind; reason: string };

export type SigV4Result = { ok: true; accessKeyId: string; region: string } | SigV4Failure;

const fail = (kind: AuthFailureKind, reason: string): SigV4Failure => ({ ok: false, kind, reason });

interface ParsedAuthorization {
  accessKeyId: string;
  date: string;
  region: string;
  service: string;
  signedHeaders: string[];
  /** SignedHeaders as sent: the names joined by ';'. */
  signedHeaderList: string;
  signature: string;
}

function parseAuthorization(header: string): ParsedAuthorization | string {
  if (!header.startsWith(ALGORITHM + ' ')) return 'Authorization is not AWS4-HMAC-SHA256';
  let credential: string | undefined;
  let signedHeaders: string | undefined;
  let signature: string | undefined;
  let fields = 0;
  // One pass over "Credential=..., SignedHeaders=..., Signature=...", without a Map or an array of parts.
  for (let at = ALGORITHM.length + 1; at <= header.length; ) {
    let end = header.indexOf(',', at);
    if (end < 0) end = header.length;
    const item = header.slice(at, end).trim();
    at = end + 1;
    const eq = item.indexOf('=');
    if (eq <= 0) return 'malformed Authorization header';
    const name = item.slice(0, eq);
    const value = item.slice(eq + 1);
    fields++;
    if (name === 'Credential') {
      if (credential !== undefined) return `duplicate ${name} in Authorization header`;
      credential = value;
    } else if (name === 'SignedHeaders') {
      if (signedHeaders !== undefined) return `duplicate ${name} in Authorization header`;
      signedHeaders = value;
    } else if (name === 'Signature') {
      if (signature !== undefined) return `duplicate ${name} in Authorization header`;
      signature = value;
    }
  }
  if (!credential || !signedHeaders || !signature || fields !== 3) {
    return 'Authorization header needs exactly Credential, SignedHeaders and Signature';
  }
  const scope = credential.split('/');
  if (scope.length !== 5 || scope[4] !== 'aws4_request') return 'malformed credential scope';
  const [accessKeyId, date, region, service] = scope as [string, string, string, string];
  return { accessKeyId, date, region, service, signedHeaders: signedHeaders.split(';'), signedHeaderList: signedHeaders, signature };
}

/**
 * The request's headers with lower-cased names, in arrival order, as name, value, name, value...: a
 * request has a handful of headers and the few looked up are found by a short scan (a Map hashed every
 * fresh name string, a measurable share of the check).
 */
function lowerCaseNames(rawHeaders: readonly string[]): string[] {
  const out = new Array<string>(rawHeaders.length & ~1);
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    out[i] = (rawHeaders[i] as string).toLowerCase();
    out[i + 1] = rawHeaders[i + 1] as string;
  }
  return out;
}

/** How many headers of this (lower-case) name the request has. */
function countOf(headers: readonly string[], name: string): number {
  let count = 0;
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === name) count++;
  return count;
}

/** The first value of this header, or undefined. */
function firstValue(headers: readonly string[], name: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === name) return headers[i + 1];
  return undefined;
}

/** Every value of this header, in arrival order, or undefined when it is absent. */
function allValues(headers: readonly string[], name: string): string[] | undefined {
  let values: string[] | undefined;
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === name) (values ??= []).push(headers[i + 1] as string);
  return values;
}

/** A signed header as it enters the canonical request: its values canonicalised and joined by commas; undefined when absent. */
function canonicalHeaderValues(headers: readonly string[], name: string): string | undefined {
  let joined: string | undefined;
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i] !== name) continue;
    const v = canonicalValue(headers[i + 1] as string);
    joined = joined === undefined ? v : `${joined},${v}`;
  }
  return joined;
}

/** A signature as SigV4 writes it: 64 lower-case hex digits (a loop: the regex cost more than the check needs). */
function isLowerHex64(v: string): boolean {
  if (v.length !== 64) return false;
  for (let i = 0; i < 64; i++) {
    const c = v.charCodeAt(i);
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false;
  }
  return true;
}

/** A SignedHeaders entry: one or more of a-z, 0-9 and '-'. */
function isHeaderName(h: string): boolean {
  if (h.length === 0) return false;
  for (let i = 0; i < h.length; i++) {
    const c = h.charCodeAt(i);
    if (!((c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d)) return false;
  }
  return true;
}

/** A header value as it enters the canonical request: trimmed, inner whitespace runs made one space. */
export function canonicalValue(v: string): string {
  // Most values have no whitespace but single inner spaces, and are their own canonical form: found
  // without the regex. `\s` (and trim) also match U+00A0 and characters from U+1680 on: those take the regex.
  const n = v.length;
  let plain = n > 0 && v.charCodeAt(0) !== 0x20 && v.charCodeAt(n - 1) !== 0x20;
  for (let i = 0; plain && i < n; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x20 || c === 0xa0 || c >= 0x1680 || (c === 0x20 && v.charCodeAt(i + 1) === 0x20)) plain = false;
  }
  return plain ? v : v.trim().replace(/\s+/g, ' ');
}

/** Parses x-amz-date (YYYYMMDDTHHMMSSZ) to epoch ms, or NaN. */
export function parseAmzDate(v: string): number {
  // Requests signed within the same second carry the same value: the last one parsed is kept.
  if (v === lastAmzDate) return lastAmzDateMs;
  const m = AMZ_DATE.exec(v);
  if (!m) return NaN;
  const [y, mo, d, h, mi, s] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  const t = Date.UTC(y, mo - 1, d, h, mi, s);
  // Date.UTC rolls 2023-02-30 over to March; require every field to survive the round trip.
  const back = new Date(t);
  const ms = back.getUTCDate() === d && back.getUTCMonth() === mo - 1 && h < 24 && mi < 60 && s < 60 ? t : NaN;
  lastAmzDate = v;
  lastAmzDateMs = ms;
  return ms;
}

let lastAmzDate = '';
let lastAmzDateMs = NaN;

const hmac = (key: Buffer | string, data: string): Buffer => createHmac('sha256', key).update(data).digest();

/** A secret's derived keys by scope, and the last one handed out. */
interface SecretKeys {
  byScope: Map<string, Buffer>;
  /** Consecutive requests nearly always share the scope: they skip building the map's key. */
  last?: { accessKeyId: string; date: string; region: string; key: Buffer };
}

/**
 * Derived signing keys: four of the five HMACs of a request depend only on (secret, date, region,
 * service), so they are computed once a day per credential. Keyed first by the secret's Buffer: a
 * reload builds new Buffers, so a rotated secret never meets a key derived from the old one, and the
 * old entries (the last key included) go with the old configuration.
 */
const signingKeys = new WeakMap<Buffer, SecretKeys>();
/** Scopes remembered per secret; a few days times a few regions in practice. */
const MAX_SCOPES_PER_SECRET = 64;

function signingKey(accessKeyId: string, secret: Buffer, date: string, region: string): Buffer {
  let keys = signingKeys.get(secret);
  if (!keys) signingKeys.set(secret, (keys = { byScope: new Map<string, Buffer>() }));
  const last = keys.last;
  if (last !== undefined && last.accessKeyId === accessKeyId && last.date === date && last.region === region) return last.key;
  const id = `${accessKeyId}/${date}/${region}/${SERVICE}`;
  let key = keys.byScope.get(id);
  if (!key) {
    if (keys.byScope.size >= MAX_SCOPES_PER_SECRET) keys.byScope.clear();
    const kDate = hmac(Buffer.concat([Buffer.from('AWS4'), secret]), date);
    key = hmac(hmac(hmac(kDate, region), SERVICE), 'aws4_request');
    keys.byScope.set(id, key);
  }
  keys.last = { accessKeyId, date, region, key };
  return key;
}

/** One-shot crypto.hash: no Hash object per call (two per request on the hot path). */
export function sha256Hex(data: Buffer | string): string {
  return hash('sha256', data, 'hex');
}

/**
 * What the headers alone establish, before any body byte is read: a well-formed SigV4 Authorization
 * for this service, a scope the key store accepts, a fresh X-Amz-Date matching it, a signed header
 * set that covers host and x-amz-date, and a live access key id. Only the body hash and the signature
 * are left for completeSigV4, which reuses this parse.
 */
export interface SigV4Headers {
  ok: true;
  accessKeyId: string;
  region: string;
  date: string;
  amzDate: string;
  signedHeaders: string;
  signature: string;
  canonicalHeaders: string;
  /** x-amz-content-sha256 as sent (all of its values), if sent. */
  claimedPayloadHash: readonly string[] | undefined;
  secret: Buffer;
}

export function preverifySigV4(rawHeaders: readonly string[], policy: SigV4Policy): SigV4Headers | SigV4Failure {
  const headers = lowerCaseNames(rawHeaders);
  const authorizations = countOf(headers, 'authorization');
  if (authorizations === 0) return fail('malformed', 'missing Authorization header');
  if (authorizations !== 1) return fail('malformed', 'more than one Authorization header');
  const auth = parseAuthorization(firstValue(headers, 'authorization') as string);
  if (typeof auth === 'string') return fail('malformed', auth);

  if (auth.service !== SERVICE) return fail('scope', `credential scope service must be ${SERVICE}`);
  if (policy.regions.size > 0 && !policy.regions.has(auth.region)) return fail('scope', 'credential scope region is not accepted by this key store');
  if (!/^[a-z0-9-]{1,32}$/.test(auth.region)) return fail('scope', 'malformed credential scope region');

  const signed = auth.signedHeaders;
  for (let i = 0; i < signed.length; i++) {
    const h = signed[i] as string;
    if (!isHeaderName(h)) return fail('signed_headers', 'SignedHeaders must be lowercase header names');
    if (i > 0 && (signed[i - 1] as string) >= h) return fail('signed_headers', 'SignedHeaders must be sorted and unique');
  }
  if (!signed.includes('host') || !signed.includes('x-amz-date')) return fail('signed_headers', 'SignedHeaders must include host and x-amz-date');
  if (signed.includes('authorization')) return fail('signed_headers', 'the Authorization header cannot be signed');

  if (countOf(headers, 'x-amz-date') !== 1) return fail('malformed', 'exactly one X-Amz-Date header is required');
  if (countOf(headers, 'host') !== 1) return fail('malformed', 'exactly one Host header is required');
  const amzDate = firstValue(headers, 'x-amz-date') as string;
  const t = parseAmzDate(amzDate);
  if (Number.isNaN(t)) return fail('malformed', 'malformed X-Amz-Date');
  if (amzDate.slice(0, 8) !== auth.date) return fail('scope', 'credential scope date does not match X-Amz-Date');
  if (Math.abs(policy.now - t) > policy.clockSkewMs) return fail('clock_skew', 'request time is outside the allowed clock skew');

  let canonicalHeaders = '';
  for (const name of signed) {
    const values = canonicalHeaderValues(headers, name);
    if (values === undefined) return fail('signed_headers', `signed header ${name} is missing`);
    canonicalHeaders += `${name}:${values}\n`;
  }

  // Looked up only after every structural check: a malformed request learns nothing about key ids.
  const secret = policy.secrets.get(auth.accessKeyId);
  if (!secret) return fail('unknown_access_key', 'unknown access key id');
  return {
    ok: true,
    accessKeyId: auth.accessKeyId,
    region: auth.region,
    date: auth.date,
    amzDate,
    signedHeaders: auth.signedHeaderList,
    signature: auth.signature,
    canonicalHeaders,
    claimedPayloadHash: allValues(headers, 'x-amz-content-sha256'),
    secret,
  };
}

/**
 * The string to sign (spec Appendix A) over a canonical request whose headers are already canonical.
 * The path goes in as given: the router admits only unreserved characters, which canonicalise to themselves.
 * Shared with the proxy's own signer (sign.ts), so that both build it byte for byte alike.
 */
export function stringToSign(method: string, path: string, canonicalHeaders: string, signedHeaders: string, payloadHash: string, amzDate: string, region: string): string {
  const canonicalRequest = `${method}\n${path}\n\n${canonicalHeaders}\n${signedHeaders}\n${payloadHash}`;
  const scope = `${amzDate.slice(0, 8)}/${region}/${SERVICE}/aws4_request`;
  return `${ALGORITHM}\n${amzDate}\n${scope}\n${sha256Hex(canonicalRequest)}`;
}

/** HMAC-SHA256 of the string to sign under the (cached) signing key of the credential's scope. */
export function signatureOf(accessKeyId: string, secret: Buffer, date: string, region: string, toSign: string): Buffer {
  return createHmac('sha256', signingKey(accessKeyId, secret, date, region)).update(toSign).digest();
}

/** The checks that need the body: its hash, then the signature over the canonical request. */
export function completeSigV4(pre: SigV4Headers, req: Pick<SigV4Request, 'method' | 'path' | 'body'>): SigV4Result {
  const payloadHash = sha256Hex(req.body);
  const claimed = pre.claimedPayloadHash;
  if (claimed && (claimed.length !== 1 || claimed[0] !== payloadHash)) return fail('body_hash', 'x-amz-content-sha256 does not match the body');
  if (!isLowerHex64(pre.signature)) return fail('signature', 'signature does not match');

  const toSign = stringToSign(req.method, req.path, pre.canonicalHeaders, pre.signedHeaders, payloadHash, pre.amzDate, pre.region);
  const expected = signatureOf(pre.accessKeyId, pre.secret, pre.date, pre.region, toSign);
  const provided = Buffer.from(pre.signature, 'hex');
  if (!timingSafeEqual(expected, provided)) return fail('signature', 'signature does not match');
  return { ok: true, accessKeyId: pre.accessKeyId, region: pre.region };
}

export function verifySigV4(req: SigV4Request, policy: SigV4Policy): SigV4Result {
  const pre = preverifySigV4(req.rawHeaders, policy);
  return pre.ok ? completeSigV4(pre, req) : pre;
}
