import { XksError } from '../errors';

/** requestMetadata as the spec defines it; unknown extra fields are tolerated and ignored. */
export interface RequestMetadata {
  awsPrincipalArn?: string;
  awsSourceVpc?: string;
  awsSourceVpce?: string;
  kmsKeyArn?: string;
  kmsOperation: string;
  kmsRequestId: string;
  kmsViaService?: string;
}

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

const MAX_ARN = 2048;
const MAX_METADATA_STRING = 2048;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

const invalid = (msg: string): XksError => new XksError('ValidationException', msg);

type Json = Record<string, unknown>;

export function parseJsonObject(body: Buffer): Json {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw invalid('request body is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('request body must be a JSON object');
  return value as Json;
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

const ARN_FIELDS = new Set(['awsPrincipalArn', 'kmsKeyArn']);

/** requiredFields name which requestMetadata fields this operation must carry. */
export function parseRequestMetadata(body: Json, requiredFields: readonly string[]): RequestMetadata {
  const rm = body.requestMetadata;
  if (rm === undefined || rm === null) throw invalid('requestMetadata is required');
  if (typeof rm !== 'object' || Array.isArray(rm)) throw invalid('requestMetadata must be an object');
  const obj = rm as Json;
  const where = 'requestMetadata.';
  const out: Record<string, string | undefined> = {};
  for (const f of ['awsPrincipalArn', 'awsSourceVpc', 'awsSourceVpce', 'kmsKeyArn', 'kmsOperation', 'kmsRequestId', 'kmsViaService']) {
    const max = ARN_FIELDS.has(f) ? MAX_ARN : MAX_METADATA_STRING;
    out[f] = requiredFields.includes(f) ? requiredString(obj, f, where, max) : optionalString(obj, f, where, max);
  }
  return out as unknown as RequestMetadata;
}

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
  if (!BASE64.test(v)) throw invalid(`${field} is not valid standard Base64`);
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

const KEY_OP_METADATA = ['awsPrincipalArn', 'kmsKeyArn', 'kmsOperation', 'kmsRequestId'] as const;

/**
 * ValidationException is not among GetHealthStatus's errors in the spec: a health request is answered
 * whatever its body, and its metadata is kept (for the log) only where it is well-formed.
 */
export function parseHealthRequest(body: Json): Partial<RequestMetadata> {
  const rm = body.requestMetadata;
  if (typeof rm !== 'object' || rm === null) return {};
  const pick = (v: unknown): string | undefined => (typeof v === 'string' && v.length <= MAX_METADATA_STRING ? v : undefined);
  const { kmsOperation, kmsRequestId } = rm as Json;
  return { kmsOperation: pick(kmsOperation), kmsRequestId: pick(kmsRequestId) };
}

export function parseMetadataRequest(body: Json): RequestMetadata {
  // kmsKeyArn is absent when KMS calls GetKeyMetadata for CreateKey.
  return parseRequestMetadata(body, ['awsPrincipalArn', 'kmsOperation', 'kmsRequestId']);
}

export function parseEncryptRequest(body: Json, limits: Limits): EncryptInput {
  const metadata = parseRequestMetadata(body, KEY_OP_METADATA);
  requireAesGcm(body);
  const plaintext = decodeBase64(body, 'plaintext', true, limits.maxPlaintextBytes, limits.maxPlaintextBytes) as Buffer;
  const aad = decodeBase64(body, 'additionalAuthenticatedData', false, limits.maxAadBytes, limits.maxAadBytes);
  const alg = body.ciphertextDataIntegrityValueAlgorithm;
  if (alg !== undefined && alg !== null && alg !== 'SHA_256') throw invalid('ciphertextDataIntegrityValueAlgorithm must be SHA_256');
  return { metadata, plaintext, aad, wantCdiv: alg === 'SHA_256' };
}

export function parseDecryptRequest(body: Json, limits: Limits): DecryptInput {
  const metadata = parseRequestMetadata(body, KEY_OP_METADATA);
  requireAesGcm(body);
  const ciphertext = decodeBase64(body, 'ciphertext', true, limits.maxPlaintextBytes, limits.maxPlaintextBytes) as Buffer;
  const ciphertextMetadata = decodeBase64(body, 'ciphertextMetadata', false, 20);
  const aad = decodeBase64(body, 'additionalAuthenticatedData', false, limits.maxAadBytes, limits.maxAadBytes);
  const iv = decodeBase64(body, 'initializationVector', true, 16) as Buffer;
  if (iv.length !== 12 && iv.length !== 16) throw invalid('initializationVector must be 12 or 16 bytes');
  const tag = decodeBase64(body, 'authenticationTag', true, 16) as Buffer;
  if (tag.length !== 16) throw invalid('authenticationTag must be 16 bytes');
  return { metadata, ciphertext, ciphertextMetadata, aad, iv, tag };
}
