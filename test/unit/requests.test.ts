import fc from 'fast-check';
import { XksError } from '../../src/errors';
import {
  isStandardBase64,
  parseDecryptRequest,
  parseEncryptRequest,
  parseHealthRequest,
  parseJsonObject,
  parseMetadataRequest,
  parseRequestMetadata,
  Limits,
} from '../../src/xks/requests';

const limits: Limits = { maxPlaintextBytes: 4300, maxAadBytes: 8192 };
const b64 = (n: number, fill = 7): string => Buffer.alloc(n, fill).toString('base64');

const meta = {
  awsPrincipalArn: 'arn:aws:iam::123456789012:user/Alice',
  kmsKeyArn: 'arn:aws:kms:us-east-1:123456789012:key/k',
  kmsOperation: 'Encrypt',
  kmsRequestId: 'req-1',
};
const encryptBody = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  requestMetadata: { ...meta },
  plaintext: b64(3),
  encryptionAlgorithm: 'AES_GCM',
  ...extra,
});
const decryptBody = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  requestMetadata: { ...meta, kmsOperation: 'Decrypt' },
  ciphertext: b64(3),
  encryptionAlgorithm: 'AES_GCM',
  initializationVector: b64(12, 1),
  authenticationTag: b64(16, 2),
  ...extra,
});

/** Runs fn and returns the XksError it threw, failing the test if it threw anything else or nothing. */
function thrown(fn: () => unknown): XksError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(XksError);
    return e as XksError;
  }
  throw new Error('expected an XksError, nothing was thrown');
}

const expectError = (fn: () => unknown, errorName: string, message: string | RegExp): void => {
  const e = thrown(fn);
  expect(e.errorName).toBe(errorName);
  if (typeof message === 'string') expect(e.message).toBe(message);
  else expect(e.message).toMatch(message);
};

describe('parseJsonObject', () => {
  it('parses a JSON object', () => {
    expect(parseJsonObject(Buffer.from('{"a":1,"b":{"c":"d"}}'))).toEqual({ a: 1, b: { c: 'd' } });
  });

  it.each(['', '{', '{"a":}', "{'a':1}", 'undefined', '\u00ff'])('rejects %p as not JSON', (text) => {
    expectError(() => parseJsonObject(Buffer.from(text, 'latin1')), 'ValidationException', 'request body is not valid JSON');
  });

  it.each(['null', '[]', '[{}]', '1', '"s"', 'true'])('rejects %s as not an object', (text) => {
    expectError(() => parseJsonObject(Buffer.from(text)), 'ValidationException', 'request body must be a JSON object');
  });

  it('rejects a duplicated key (issue 10 item 6)', () => {
    expectError(() => parseJsonObject(Buffer.from('{"plaintext":"AA==","plaintext":"AAA="}')), 'ValidationException', /duplicate/i);
  });

  it('names a repeated key inside requestMetadata, but never echoes an odd one', () => {
    const nested = '{"requestMetadata":{"kmsRequestId":"a","awsPrincipalArn":"x","awsPrincipalArn":"y"}}';
    expectError(() => parseJsonObject(Buffer.from(nested)), 'ValidationException', 'request body has a duplicate key "awsPrincipalArn"');
    expectError(() => parseJsonObject(Buffer.from('{"a b\\n":1,"a b\\n":2}')), 'ValidationException', 'request body has a duplicate key');
  });
});

describe('requestMetadata', () => {
  const KEY_OP = ['awsPrincipalArn', 'kmsKeyArn', 'kmsOperation', 'kmsRequestId'];

  it('returns the known fields and drops unknown extra ones', () => {
    const out = parseRequestMetadata({ requestMetadata: { ...meta, awsSourceVpc: 'vpc-1', futureField: { x: 1 }, another: 7 } }, 'Encrypt');
    expect(out).toEqual({ ...meta, awsSourceVpc: 'vpc-1' });
    expect(Object.keys(out)).not.toContain('futureField');
    expect(Object.keys(out)).not.toContain('another');
  });

  it.each([
    ['absent', {}],
    ['null', { requestMetadata: null }],
  ])('is required (%s)', (_what, body) => {
    expectError(() => parseRequestMetadata(body, 'Encrypt'), 'ValidationException', 'requestMetadata is required');
  });

  it.each([['a string', 'x'], ['an array', [meta]], ['a number', 1]])('must be an object, not %s', (_what, rm) => {
    expectError(() => parseRequestMetadata({ requestMetadata: rm }, 'Encrypt'), 'ValidationException', 'requestMetadata must be an object');
  });

  it.each(KEY_OP)('requires %s when the operation names it', (field) => {
    const rm: Record<string, unknown> = { ...meta };
    delete rm[field];
    expectError(() => parseRequestMetadata({ requestMetadata: rm }, 'Encrypt'), 'ValidationException', `requestMetadata.${field} is required`);
    expectError(() => parseRequestMetadata({ requestMetadata: { ...meta, [field]: null } }, 'Encrypt'), 'ValidationException', `requestMetadata.${field} is required`);
  });

  it.each(['awsPrincipalArn', 'awsSourceVpc', 'awsSourceVpce', 'kmsKeyArn', 'kmsOperation', 'kmsRequestId', 'kmsViaService'])(
    '%s must be a string',
    (field) => {
      for (const v of [7, true, {}, ['a']]) {
        expectError(() => parseRequestMetadata({ requestMetadata: { ...meta, [field]: v } }, 'Encrypt'), 'ValidationException', `requestMetadata.${field} must be a string`);
      }
    },
  );

  it('treats optional fields as absent when missing or null', () => {
    const out = parseRequestMetadata({ requestMetadata: { ...meta, awsSourceVpc: null } }, 'Encrypt');
    expect(out.awsSourceVpc).toBeUndefined();
    expect(out.awsSourceVpce).toBeUndefined();
    expect(out.kmsViaService).toBeUndefined();
  });

  it('accepts an empty string in a required field (structure of kmsRequestId is never validated)', () => {
    expect(parseRequestMetadata({ requestMetadata: { ...meta, kmsRequestId: '' } }, 'Encrypt').kmsRequestId).toBe('');
  });

  it.each(['Encrypt', 'GenerateDataKeyFutureVariant', 'not even a name', ''])('accepts any kmsOperation value (%p)', (op) => {
    expect(parseRequestMetadata({ requestMetadata: { ...meta, kmsOperation: op } }, 'Encrypt').kmsOperation).toBe(op);
  });

  it.each(['awsPrincipalArn', 'kmsKeyArn', 'kmsRequestId', 'kmsViaService'])('bounds %s at 2048 characters', (field) => {
    expect(parseRequestMetadata({ requestMetadata: { ...meta, [field]: 'a'.repeat(2048) } }, 'Encrypt')[field as 'kmsRequestId']).toHaveLength(2048);
    expectError(
      () => parseRequestMetadata({ requestMetadata: { ...meta, [field]: 'a'.repeat(2049) } }, 'Encrypt'),
      'ValidationException',
      `requestMetadata.${field} exceeds 2048 characters`,
    );
  });

  it('GetKeyMetadata does not require kmsKeyArn (absent when KMS calls it for CreateKey)', () => {
    const { kmsKeyArn: _omit, ...rest } = meta;
    expect(parseMetadataRequest({ requestMetadata: rest }).metadata).toMatchObject(rest);
    expect(parseMetadataRequest({ requestMetadata: rest }).metadata.kmsKeyArn).toBeUndefined();
    expectError(() => parseMetadataRequest({ requestMetadata: { ...rest, awsPrincipalArn: undefined } }), 'ValidationException', 'requestMetadata.awsPrincipalArn is required');
  });

  it('Encrypt and Decrypt require kmsKeyArn', () => {
    const { kmsKeyArn: _omit, ...rest } = meta;
    expectError(() => parseEncryptRequest(encryptBody({ requestMetadata: rest }), limits), 'ValidationException', 'requestMetadata.kmsKeyArn is required');
    expectError(() => parseDecryptRequest(decryptBody({ requestMetadata: rest }), limits), 'ValidationException', 'requestMetadata.kmsKeyArn is required');
  });
});

describe('GetHealthStatus', () => {
  it('keeps kmsOperation and kmsRequestId only', () => {
    expect(parseHealthRequest({ requestMetadata: { kmsOperation: 'KmsHealthCheck', kmsRequestId: 'h', awsPrincipalArn: 'x' } })).toEqual({
      kmsOperation: 'KmsHealthCheck',
      kmsRequestId: 'h',
    });
  });

  it('accepts any kmsOperation value', () => {
    expect(parseHealthRequest({ requestMetadata: { kmsOperation: 'SomeFutureOperation', kmsRequestId: '' } }).kmsOperation).toBe('SomeFutureOperation');
  });

  // Changed deliberately for issue 10 item 1: these bodies used to be answered (the spec's error table
  // omits ValidationException for health), but the spec calls both fields REQUIRED and AWS's test client
  // expects ValidationException.
  it.each([
    [{}, 'requestMetadata is required'],
    [{ requestMetadata: {} }, 'requestMetadata.kmsOperation is required'],
    [{ requestMetadata: 'x' }, 'requestMetadata must be an object'],
    [{ requestMetadata: { kmsOperation: 'KmsHealthCheck' } }, 'requestMetadata.kmsRequestId is required'],
    [{ requestMetadata: { kmsOperation: 7, kmsRequestId: 'h' } }, 'requestMetadata.kmsOperation must be a string'],
    [{ requestMetadata: { kmsOperation: 'KmsHealthCheck', kmsRequestId: 'a'.repeat(2049) } }, 'requestMetadata.kmsRequestId exceeds 2048 characters'],
  ])('refuses %j with ValidationException', (body, message) => {
    expectError(() => parseHealthRequest(body), 'ValidationException', message);
  });
});

describe('Encrypt', () => {
  it('parses a minimal request', () => {
    expect(parseEncryptRequest(encryptBody(), limits)).toEqual({
      metadata: meta,
      plaintext: Buffer.alloc(3, 7),
      aad: undefined,
      wantCdiv: false,
    });
  });

  it('parses AAD and the CDIV algorithm, tolerating unknown extra fields', () => {
    const out = parseEncryptRequest(encryptBody({ additionalAuthenticatedData: b64(5, 9), ciphertextDataIntegrityValueAlgorithm: 'SHA_256', someNewField: [1] }), limits);
    expect(out.aad).toEqual(Buffer.alloc(5, 9));
    expect(out.wantCdiv).toBe(true);
  });

  it('accepts an empty plaintext', () => {
    expect(parseEncryptRequest(encryptBody({ plaintext: '' }), limits).plaintext).toEqual(Buffer.alloc(0));
  });

  it.each([
    ['absent', undefined, 'encryptionAlgorithm is required'],
    ['another algorithm', 'AES_CBC', 'encryptionAlgorithm must be AES_GCM'],
    ['lower case', 'aes_gcm', 'encryptionAlgorithm must be AES_GCM'],
    ['a number', 1, 'encryptionAlgorithm must be AES_GCM'],
  ])('requires encryptionAlgorithm AES_GCM (%s)', (_what, alg, message) => {
    expectError(() => parseEncryptRequest(encryptBody({ encryptionAlgorithm: alg }), limits), 'ValidationException', message);
  });

  it.each([['SHA_512'], ['sha_256'], [1]])('refuses ciphertextDataIntegrityValueAlgorithm %p', (alg) => {
    expectError(
      () => parseEncryptRequest(encryptBody({ ciphertextDataIntegrityValueAlgorithm: alg }), limits),
      'ValidationException',
      'ciphertextDataIntegrityValueAlgorithm must be SHA_256',
    );
  });

  it('treats a null CDIV algorithm as absent', () => {
    expect(parseEncryptRequest(encryptBody({ ciphertextDataIntegrityValueAlgorithm: null }), limits).wantCdiv).toBe(false);
  });

  it('requires plaintext as a Base64 string', () => {
    expectError(() => parseEncryptRequest(encryptBody({ plaintext: undefined }), limits), 'ValidationException', 'plaintext is required');
    expectError(() => parseEncryptRequest(encryptBody({ plaintext: 12 }), limits), 'ValidationException', 'plaintext must be a Base64 string');
    expectError(() => parseEncryptRequest(encryptBody({ plaintext: ['AA=='] }), limits), 'ValidationException', 'plaintext must be a Base64 string');
  });

  it.each([
    ['missing padding', 'AAA'],
    ['missing double padding', 'AA'],
    ['URL-safe alphabet', 'ab-_'],
    ['a space inside', 'AAAA AAAA'],
    ['a newline', 'AAAA\nAAAA'],
    ['padding in the middle', 'AA==AAAA'],
    ['three padding characters', 'A==='],
    ['a non-ASCII character', 'AAA\u00e9'],
  ])('rejects Base64 with %s', (_what, text) => {
    expectError(() => parseEncryptRequest(encryptBody({ plaintext: text }), limits), 'ValidationException', 'plaintext is not valid standard Base64');
  });

  it('accepts plaintext up to the limit and answers UnsupportedOperationException one byte above', () => {
    expect(parseEncryptRequest(encryptBody({ plaintext: b64(4300) }), limits).plaintext).toHaveLength(4300);
    for (const n of [4301, 4302, 4303, 100_000]) {
      expectError(
        () => parseEncryptRequest(encryptBody({ plaintext: b64(n) }), limits),
        'UnsupportedOperationException',
        'plaintext exceeds the 4300 bytes this proxy supports',
      );
    }
  });

  it('checks the size of an oversized field before its syntax', () => {
    expectError(() => parseEncryptRequest(encryptBody({ plaintext: '!'.repeat(10_000) }), limits), 'UnsupportedOperationException', /plaintext exceeds/);
  });

  it('accepts AAD up to the limit and answers UnsupportedOperationException one byte above', () => {
    expect(parseEncryptRequest(encryptBody({ additionalAuthenticatedData: b64(8192) }), limits).aad).toHaveLength(8192);
    expectError(
      () => parseEncryptRequest(encryptBody({ additionalAuthenticatedData: b64(8193) }), limits),
      'UnsupportedOperationException',
      'additionalAuthenticatedData exceeds the 8192 bytes this proxy supports',
    );
  });

  it('follows the configured limits', () => {
    const small: Limits = { maxPlaintextBytes: 10, maxAadBytes: 2 };
    expect(parseEncryptRequest(encryptBody({ plaintext: b64(10), additionalAuthenticatedData: b64(2) }), small).plaintext).toHaveLength(10);
    expectError(() => parseEncryptRequest(encryptBody({ plaintext: b64(11) }), small), 'UnsupportedOperationException', 'plaintext exceeds the 10 bytes this proxy supports');
    expectError(() => parseEncryptRequest(encryptBody({ additionalAuthenticatedData: b64(3) }), small), 'UnsupportedOperationException', /additionalAuthenticatedData exceeds the 2 bytes/);
  });

  it('rejects malformed AAD', () => {
    expectError(() => parseEncryptRequest(encryptBody({ additionalAuthenticatedData: 'A' }), limits), 'ValidationException', 'additionalAuthenticatedData is not valid standard Base64');
    expectError(() => parseEncryptRequest(encryptBody({ additionalAuthenticatedData: 5 }), limits), 'ValidationException', 'additionalAuthenticatedData must be a Base64 string');
  });

  it('checks requestMetadata before the payload', () => {
    expectError(() => parseEncryptRequest({ plaintext: 'bad', encryptionAlgorithm: 'nope' }, limits), 'ValidationException', 'requestMetadata is required');
  });
});

describe('Decrypt', () => {
  it('parses a full request', () => {
    const out = parseDecryptRequest(decryptBody({ ciphertextMetadata: b64(5, 3), additionalAuthenticatedData: b64(4, 4), extraField: 'ignored' }), limits);
    expect(out).toEqual({
      metadata: { ...meta, kmsOperation: 'Decrypt' },
      ciphertext: Buffer.alloc(3, 7),
      ciphertextMetadata: Buffer.alloc(5, 3),
      aad: Buffer.alloc(4, 4),
      iv: Buffer.alloc(12, 1),
      tag: Buffer.alloc(16, 2),
    });
  });

  it.each(['ciphertext', 'initializationVector', 'authenticationTag', 'encryptionAlgorithm'])('requires %s', (field) => {
    const body = decryptBody();
    delete body[field];
    expectError(() => parseDecryptRequest(body, limits), 'ValidationException', `${field} is required`);
  });

  it.each(['ciphertext', 'initializationVector', 'authenticationTag', 'ciphertextMetadata', 'additionalAuthenticatedData'])('requires %s to be a Base64 string', (field) => {
    expectError(() => parseDecryptRequest(decryptBody({ [field]: { b: 1 } }), limits), 'ValidationException', `${field} must be a Base64 string`);
    expectError(() => parseDecryptRequest(decryptBody({ [field]: 'A-A=' }), limits), 'ValidationException', `${field} is not valid standard Base64`);
  });

  it.each([12, 16])('accepts a %i-byte IV', (n) => {
    expect(parseDecryptRequest(decryptBody({ initializationVector: b64(n) }), limits).iv).toHaveLength(n);
  });

  it.each([0, 1, 11, 13, 15])('rejects a %i-byte IV', (n) => {
    expectError(() => parseDecryptRequest(decryptBody({ initializationVector: b64(n) }), limits), 'ValidationException', 'initializationVector must be 12 or 16 bytes');
  });

  it('rejects an IV above 16 bytes as invalid, not unsupported', () => {
    expectError(() => parseDecryptRequest(decryptBody({ initializationVector: b64(17) }), limits), 'ValidationException', 'initializationVector exceeds 16 bytes');
    expectError(() => parseDecryptRequest(decryptBody({ initializationVector: b64(64) }), limits), 'ValidationException', 'initializationVector exceeds 16 bytes');
  });

  it.each([0, 12, 15])('rejects a %i-byte tag', (n) => {
    expectError(() => parseDecryptRequest(decryptBody({ authenticationTag: b64(n) }), limits), 'ValidationException', 'authenticationTag must be 16 bytes');
  });

  it('rejects a tag above 16 bytes', () => {
    expectError(() => parseDecryptRequest(decryptBody({ authenticationTag: b64(17) }), limits), 'ValidationException', 'authenticationTag exceeds 16 bytes');
  });

  it('accepts ciphertextMetadata up to 20 bytes and rejects 21 as invalid, not unsupported', () => {
    expect(parseDecryptRequest(decryptBody({ ciphertextMetadata: b64(20) }), limits).ciphertextMetadata).toHaveLength(20);
    expect(parseDecryptRequest(decryptBody({ ciphertextMetadata: '' }), limits).ciphertextMetadata).toEqual(Buffer.alloc(0));
    expectError(() => parseDecryptRequest(decryptBody({ ciphertextMetadata: b64(21) }), limits), 'ValidationException', 'ciphertextMetadata exceeds 20 bytes');
    expectError(() => parseDecryptRequest(decryptBody({ ciphertextMetadata: b64(300) }), limits), 'ValidationException', 'ciphertextMetadata exceeds 20 bytes');
  });

  it('treats absent optional fields as undefined', () => {
    const out = parseDecryptRequest(decryptBody({ ciphertextMetadata: null }), limits);
    expect(out.ciphertextMetadata).toBeUndefined();
    expect(out.aad).toBeUndefined();
  });

  it('bounds ciphertext and AAD by the limits with UnsupportedOperationException', () => {
    expect(parseDecryptRequest(decryptBody({ ciphertext: b64(4300) }), limits).ciphertext).toHaveLength(4300);
    expectError(() => parseDecryptRequest(decryptBody({ ciphertext: b64(4301) }), limits), 'UnsupportedOperationException', 'ciphertext exceeds the 4300 bytes this proxy supports');
    expectError(
      () => parseDecryptRequest(decryptBody({ additionalAuthenticatedData: b64(8193) }), limits),
      'UnsupportedOperationException',
      'additionalAuthenticatedData exceeds the 8192 bytes this proxy supports',
    );
  });

  it('requires encryptionAlgorithm AES_GCM', () => {
    expectError(() => parseDecryptRequest(decryptBody({ encryptionAlgorithm: 'RSA' }), limits), 'ValidationException', 'encryptionAlgorithm must be AES_GCM');
  });
});

describe('error statuses', () => {
  it('maps malformed input to 400 and oversized input to 501', () => {
    expect(thrown(() => parseEncryptRequest(encryptBody({ plaintext: 'A' }), limits)).status).toBe(400);
    expect(thrown(() => parseEncryptRequest(encryptBody({ plaintext: b64(4301) }), limits)).status).toBe(501);
  });
});

describe('isStandardBase64', () => {
  // The regular expression the proxy used before: the same language, checked another way.
  const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

  test('accepts exactly what the standard padded alphabet allows', () => {
    for (const v of ['', 'AA==', 'AAA=', 'AAAA', 'ab+/', Buffer.from('hello world').toString('base64')]) expect([v, isStandardBase64(v)]).toEqual([v, true]);
    for (const v of ['A', 'AA=', '====', 'A===', '=AAA', 'AA=A', 'AAA', 'AA-_', 'AAAA\n', 'AAA\u00e9', 'AAAA====']) expect([v, isStandardBase64(v)]).toEqual([v, false]);
  });

  test('agrees with the regular expression on any string of the alphabet, padding and a few others', () => {
    const chars = fc.constantFrom(...'ABCXYZabcxyz0189+/=-_ \n\u00e9');
    fc.assert(fc.property(fc.array(chars, { maxLength: 24 }).map((a) => a.join('')), (v) => isStandardBase64(v) === BASE64.test(v)), { numRuns: 20_000 });
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (b) => isStandardBase64(Buffer.from(b).toString('base64'))));
  });
});
