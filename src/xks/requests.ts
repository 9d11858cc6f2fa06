import { XksError } from '../errors';
import { EXTERNAL_KEY_ID } from '../config/schema';
import { findDuplicateKey, hasDuplicateKey } from './duplicate-keys';

type MetadataOperation = 'GetHealthStatus' | 'GetKeyMetadata' | 'Encrypt' | 'Decrypt';

/**
 * requestMetadata as the spec defines it, in one table: parsing, the request log and audit entries, and
 * the policy input all read it, so a new field is one row. Order matters: fields are validated (and a
 * request's first bad field reported) in this order. Unknown extra fields are tolerated and ignored.
 * GetHealthStatus reads only the fields it requires: its requestMetadata has no others in the spec.
 */
export const METADATA_FIELDS = [
  { name: 'awsPrincipalArn', maxLength: 2048, requiredFor: ['GetKeyMetadata', 'Encrypt', 'Decrypt'] },
  { name: 'awsSourceVpc', maxLength: 2048, requiredFor: [] },
  { name: 'awsSourceVpce', maxLength: 2048, requiredFor: [] },
  // Absent when KMS calls GetKeyMetadata for CreateKey.
  { name: 'kmsKeyArn', maxLength: 2048, requiredFor: ['Encrypt', 'Decrypt'] },
  { name: 'kmsOperation', maxLength: 2048, requiredFor: ['GetHealthStatus', 'GetKeyMetadata', 'Encrypt', 'Decrypt'] },
  { name: 'kmsRequestId', maxLength: 2048, requiredFor: ['GetHealthStatus', 'GetKeyMetadata', 'Encrypt', 'Decrypt'] },
  { name: 'kmsViaService', maxLength: 2048, requiredFor: [] },
] as const satisfies readonly { name: string; maxLength: number; requiredFor: readonly MetadataOperation[] }[];

type MetadataField = (typeof METADATA_FIELDS)[number]['name'];

/** The fields every operation requires are always present; the others may be absent. */
export type RequestMetadata = Partial<Record<MetadataField, string>> & { kmsOperation: string; kmsRequestId: string };

export interface EncryptInput {
  metadata: RequestMetadata;
  plaintext: Buffer;
  aad?: Buffer;
  wantCdiv: boolean;
}

export interface DecryptInput {
  metadata: RequestMetadata;
  ciphertext: Buffer;
  ciphertextMetadata?: Buffer;
  aad?: Buffer;
  iv: Buffer;
  tag: Buffer;
}

export interface Limits {
  maxPlaintextBytes: number;
  maxAadBytes: number;
}

/** The standard Base64 alphabet (RFC 4648 section 4), by character code. */
const BASE64_ALPHABET = new Uint8Array(128);
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/') BASE64_ALPHABET[c.charCodeAt(0)] = 1;

/**
 * Standard Base64 with padding: whole 4-character groups of the alphabet, the last one ending in at most
 * two '='. (The regex saying the same cost more per request than decoding the field.)
 */
export function isStandardBase64(v: string): boolean {
  const n = v.length;
  if (n % 4 !== 0) return false;
  let end = n;
  if (n > 0 && v.charCodeAt(n - 1) === 0x3d) end -= v.charCodeAt(n - 2) === 0x3d ? 2 : 1;
  for (let i = 0; i < end; i++) {
    const c = v.charCodeAt(i);
    if (c > 127 || BASE64_ALPHABET[c] === 0) return false;
  }
  return true;
}

const invalid = (msg: string): XksError => new XksError('ValidationException', msg);

/** A JSON object as parsed: its fields are validated one by one. */
export type Json = Record<string, unknown>;

const isJsonObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A body whose keys repeat is refused: JSON.parse keeps the last, and a policy or log could read another. */
export function parseJsonObject(body: Buffer): Json {
  const text = body.toString('utf8');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalid('request body is not valid JSON');
  }
  if (!isJsonObject(value)) throw invalid('request body must be a JSON object');
  if (hasDuplicateKey(text, value)) {
    const repeated = findDuplicateKey(text);
    throw invalid(repeated !== undefined && /^[A-Za-z0-9_]{1,64}$/.test(repeated) ? `request body has a duplicate key "${repeated}"` : 'request body has a duplicate key');
  }
  return value;
}

function optionalString(obj: Json, field: string, where: string, max: number): string | undefined {
  const v = obj[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw invalid(`${where}${field} must be a string`);
  if (v.length > max) throw invalid(`${where}${field} exceeds ${max} characters`);
  return v;
}

function requiredString(obj: Json, field: string, where: string, max: number): string {
  const v = optionalString(obj, field, where, max);
  if (v === undefined) throw invalid(`${where}${field} is required`);
  return v;
}

type FieldRead = { name: MetadataField; maxLength: number; required: boolean };

const fieldsRead = (operation: MetadataOperation): readonly FieldRead[] =>
  METADATA_FIELDS.map(({ name, maxLength, requiredFor }) => ({ name, maxLength, required: requiredFor.some((o: MetadataOperation) => o === operation) })).filter(
    (f) => f.required || operation !== 'GetHealthStatus',
  );

/** The fields each operation reads, in METADATA_FIELDS order: all of them, but for GetHealthStatus only those it requires. */
const FIELDS_READ: Readonly<Record<MetadataOperation, readonly FieldRead[]>> = {
  GetHealthStatus: fieldsRead('GetHealthStatus'),
  GetKeyMetadata: fieldsRead('GetKeyMetadata'),
  Encrypt: fieldsRead('Encrypt'),
  Decrypt: fieldsRead('Decrypt'),
};

const hasRequiredFields = (m: Partial<RequestMetadata>): m is RequestMetadata => m.kmsOperation !== undefined && m.kmsRequestId !== undefined;

/** Validates requestMetadata against METADATA_FIELDS for one operation. */
export function parseRequestMetadata(body: Json, operation: MetadataOperation): RequestMetadata {
  const rm = body.requestMetadata;
  if (rm === undefined || rm === null) throw invalid('requestMetadata is required');
  if (!isJsonObject(rm)) throw invalid('requestMetadata must be an object');
  const where = 'requestMetadata.';
  const out: Partial<RequestMetadata> = {};
  for (const f of FIELDS_READ[operation]) {
    out[f.name] = f.required ? requiredString(rm, f.name, where, f.maxLength) : optionalString(rm, f.name, where, f.maxLength);
  }
  // Every operation requires these two (METADATA_FIELDS), so this holds once the loop passed.
  if (!hasRequiredFields(out)) throw invalid('requestMetadata.kmsOperation and kmsRequestId are required');
  return out;
}

function decodeBase64(obj: Json, field: string, required: true, maxBytes: number, unsupportedAbove?: number): Buffer;
function decodeBase64(obj: Json, field: string, required: false, maxBytes: number, unsupportedAbove?: number): Buffer | undefined;
function decodeBase64(obj: Json, field: string, required: boolean, maxBytes: number, unsupportedAbove?: number): Buffer | undefined {
  const v = obj[field];
  if (v === undefined || v === null) {
    if (required) throw invalid(`${field} is required`);
    return undefined;
  }
  if (typeof v !== 'string') throw invalid(`${field} must be a Base64 string`);
  // Check the encoded length before the regex so an oversized field costs nothing more.
  const limit = unsupportedAbove ?? maxBytes;
  if (Math.floor(v.length / 4) * 3 - 2 > limit) {
    throw unsupportedAbove !== undefined
      ? new XksError('UnsupportedOperationException', `${field} exceeds the ${limit} bytes this proxy supports`)
      : invalid(`${field} exceeds ${limit} bytes`);
  }
  if (!isStandardBase64(v)) throw invalid(`${field} is not valid standard Base64`);
  const buf = Buffer.from(v, 'base64');
  if (buf.length > limit) {
    throw unsupportedAbove !== undefined
      ? new XksError('UnsupportedOperationException', `${field} exceeds the ${limit} bytes this proxy supports`)
      : invalid(`${field} exceeds ${limit} bytes`);
  }
  return buf;
}

function requireAesGcm(body: Json): void {
  const alg = body.encryptionAlgorithm;
  if (alg === undefined || alg === null) throw invalid('encryptionAlgorithm is required');
  if (alg !== 'AES_GCM') throw invalid('encryptionAlgorithm must be AES_GCM');
}

/**
 * The spec's error table omits ValidationException for GetHealthStatus, yet calls both of its fields
 * REQUIRED; AWS's reference proxy and its test client answer a body without them with
 * ValidationException, so this proxy does too (KMS always sends them).
 */
export function parseHealthRequest(body: Json): RequestMetadata {
  return parseRequestMetadata(body, 'GetHealthStatus');
}

export function parseMetadataRequest(body: Json): { metadata: RequestMetadata } {
  return { metadata: parseRequestMetadata(body, 'GetKeyMetadata') };
}

export function parseEncryptRequest(body: Json, limits: Limits): EncryptInput {
  const metadata = parseRequestMetadata(body, 'Encrypt');
  requireAesGcm(body);
  const plaintext = decodeBase64(body, 'plaintext', true, limits.maxPlaintextBytes, limits.maxPlaintextBytes);
  const aad = decodeBase64(body, 'additionalAuthenticatedData', false, limits.maxAadBytes, limits.maxAadBytes);
  const alg = body.ciphertextDataIntegrityValueAlgorithm;
  if (alg !== undefined && alg !== null && alg !== 'SHA_256') throw invalid('ciphertextDataIntegrityValueAlgorithm must be SHA_256');
  return { metadata, plaintext, aad, wantCdiv: alg === 'SHA_256' };
}

export function parseDecryptRequest(body: Json, limits: Limits): DecryptInput {
  const metadata = parseRequestMetadata(body, 'Decrypt');
  requireAesGcm(body);
  const ciphertext = decodeBase64(body, 'ciphertext', true, limits.maxPlaintextBytes, limits.maxPlaintextBytes);
  const ciphertextMetadata = decodeBase64(body, 'ciphertextMetadata', false, 20);
  const aad = decodeBase64(body, 'additionalAuthenticatedData', false, limits.maxAadBytes, limits.maxAadBytes);
  const iv = decodeBase64(body, 'initializationVector', true, 16);
  if (iv.length !== 12 && iv.length !== 16) throw invalid('initializationVector must be 12 or 16 bytes');
  const tag = decodeBase64(body, 'authenticationTag', true, 16);
  if (tag.length !== 16) throw invalid('authenticationTag must be 16 bytes');
  return { metadata, ciphertext, ciphertextMetadata, aad, iv, tag };
}

/** The key id from the URI path; the router only knows it is one path segment of URI-safe characters. */
export function parseExternalKeyId(keyId: string | undefined): string {
  if (keyId === undefined || !EXTERNAL_KEY_ID.test(keyId) || keyId === '.' || keyId === '..') {
    throw invalid('externalKeyId must be 1-128 characters of A-Z a-z 0-9 . _ -');
  }
  return keyId;
}
