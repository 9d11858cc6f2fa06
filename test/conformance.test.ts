import { execFile } from 'node:child_process';
import { createCipheriv, createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { ProxyApp } from '../src/app';
import { loadConfigFile } from '../src/config/load';
import { silentLogger } from '../src/log';
import { testHsm } from './support/hsm';
import { ClientCert, makePki, Pki } from './support/pki';
import { Credential, keyStoreWithKeys, newCredential, startProxy, testConfig } from './support/proxy';

/**
 * AWS's public XKS test client (github.com/aws-samples/aws-kms-xksproxy-test-client), ported: the same
 * requests, sent the way it sends them (curl --aws-sigv4, pretty-printed JSON posted with --data-binary),
 * against a real proxy on the test SoftHSM2 token. The client only looks for a string in each answer;
 * these cases also assert the exact status and errorName. Then its mTLS negatives (test_negative_mtls),
 * with its expectation, and issue 10's conformance items that the client does not reach, through the
 * same curl signer. The mTLS cases of every refusal reason, both TLS versions, are in test/mtls.test.ts.
 */
const run = promisify(execFile);
const ADMIN = join(__dirname, '..', 'dist', 'src', 'tools', 'admin.js');

// The client's own example values (utils/test_utils.sh, utils/test_encrypt_decrypt_utils.sh).
const PRINCIPAL = 'arn:aws:iam::123456789012:user/Alice';
const KEY_ARN = 'arn:aws:kms:us-east-2:123456789012:/key/1234abcd-12ab-34cd-56ef-1234567890ab';
const PLAINTEXT = 'cGxhaW50ZXh0Cg==';
const PLAINTEXT2 = 'SGVsbG8gV29ybGQh';
const AAD = 'cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n';
const AAD2 = 'cHJvamVjdD1ibHVlLGRlcGFydG1lbnQ9ZmluYW5jZQ==';

const PREFIX = '/example/uri/path/prefix';
const suffix = randomBytes(3).toString('hex'); // HSM labels are global to the shared token
const KEY_ID = 'foo';
const ENCRYPT_ONLY_KEY_ID = 'encrypt-only';
const DECRYPT_ONLY_KEY_ID = 'decrypt-only';
const IMPOTENT_KEY_ID = `impotent-${suffix}`;

let dir: string;
let app: ProxyApp;
const cred = newCredential();

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

interface Target {
  port?: number;
  prefix?: string;
  accessKeyId?: string;
  secretAccessKey?: string;
}

/** One request as the client makes it: curl signs it; the body goes byte for byte (objects pretty-printed, as its heredocs are). */
async function xks(path: string, body: unknown, t: Target = {}): Promise<Answer> {
  const data = typeof body === 'string' ? body : JSON.stringify(body, null, 4);
  const { stdout } = await run(
    'curl',
    [
      `http://127.0.0.1:${t.port ?? app.port}${t.prefix ?? PREFIX}/kms/xks/v1/${path}`,
      '--silent',
      '-w', '\n%{http_code}',
      '-H', 'Content-Type:application/json',
      '--aws-sigv4', 'aws:amz:us-east-1:kms-xks-proxy',
      '--user', `${t.accessKeyId ?? cred.accessKeyId}:${t.secretAccessKey ?? cred.secretAccessKey}`,
      '--data-binary', data,
    ],
    { maxBuffer: 1 << 22 },
  );
  const lines = stdout.split('\n');
  const status = Number(lines.pop());
  const text = lines.join('\n');
  return { status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

const expectError = (a: Answer, status: number, errorName: string): void => {
  expect({ status: a.status, errorName: a.body.errorName }).toEqual({ status, errorName });
  expect(a.body.errorMessage).toMatch(/^[\x20-\x7e]{1,511}$/);
};

const requestMetadata = (kmsOperation: string, principal = PRINCIPAL): Record<string, string> => ({
  awsPrincipalArn: principal,
  kmsKeyArn: KEY_ARN,
  kmsOperation,
  kmsRequestId: randomUUID(),
  kmsViaService: 'ebs',
});
const healthBody = () => ({ requestMetadata: { kmsOperation: 'KmsHealthCheck', kmsRequestId: randomUUID() } });

/** Encrypt bodies as the client builds them: plaintext, AAD and the CDIV algorithm each optional. */
function encryptBody(plaintext?: string, aad?: string, cdivAlgorithm?: string, principal?: string): Record<string, unknown> {
  return {
    requestMetadata: requestMetadata('Encrypt', principal),
    ...(aad ? { additionalAuthenticatedData: aad } : {}),
    ...(plaintext !== undefined ? { plaintext } : {}),
    ...(cdivAlgorithm ? { ciphertextDataIntegrityValueAlgorithm: cdivAlgorithm } : {}),
    encryptionAlgorithm: 'AES_GCM',
  };
}

/** Decrypt bodies from an encrypt answer; ciphertextMetadata only when the encrypt returned one. */
function decryptBody(sealed: Record<string, unknown>, aad?: string): Record<string, unknown> {
  return {
    requestMetadata: requestMetadata('Decrypt'),
    ...(aad ? { additionalAuthenticatedData: aad } : {}),
    ciphertext: sealed.ciphertext,
    initializationVector: sealed.initializationVector,
    authenticationTag: sealed.authenticationTag,
    ...(sealed.ciphertextMetadata !== undefined ? { ciphertextMetadata: sealed.ciphertextMetadata } : {}),
    encryptionAlgorithm: 'AES_GCM',
  };
}

async function sealed(keyId: string, plaintext: string, aad?: string, cdiv?: string): Promise<Record<string, unknown>> {
  const e = await xks(`keys/${keyId}/encrypt`, encryptBody(plaintext, aad, cdiv));
  expect(e.body).not.toHaveProperty('errorName');
  expect(e.status).toBe(200);
  expect(e.body.ciphertext).toEqual(expect.any(String));
  return e.body;
}

/** The CDIV recomputed from the answer alone, as the client does with sha256sum: SHA-256(aad || metadata || iv || ciphertext || tag). */
function expectedCdiv(answer: Record<string, unknown>, aad?: string): string {
  const h = createHash('sha256');
  for (const field of [aad, answer.ciphertextMetadata, answer.initializationVector, answer.ciphertext, answer.authenticationTag]) {
    if (typeof field === 'string') h.update(Buffer.from(field, 'base64'));
  }
  return h.digest('base64');
}

const POLICED = '/policed';
const policed = newCredential();

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'xks-conformance-'));
  const configFile = join(dir, 'config.yaml');
  const config = testConfig([
    keyStoreWithKeys('conformance', PREFIX, [cred], [
      { id: KEY_ID, label: 'test-key-1' },
      { id: ENCRYPT_ONLY_KEY_ID, label: 'test-key-2', usage: ['ENCRYPT'] },
      // The key whose value the tests know: what node:crypto seals, it must open (an HSM key has one owner).
      { id: DECRYPT_ONLY_KEY_ID, label: 'known-key', usage: ['DECRYPT'] },
    ]),
    keyStoreWithKeys('policed', POLICED, [policed], [{ id: 'k', label: 'test-key-3' }], {
      policy: {
        rules: [
          { id: 'deny-blocked-account', effect: 'deny', principalAccounts: ['444455556666'] },
          { id: 'allow-our-accounts', effect: 'allow', principalAccounts: ['123456789012', '444455556666'] },
        ],
      },
    }),
  ]);
  writeFileSync(configFile, stringify(config));
  // The impotent key is made as an operator would: xks-admin generates it in the HSM with usages KMS cannot use.
  const { stdout } = await run('node', [ADMIN, '--config', configFile, 'key', 'create', IMPOTENT_KEY_ID, '--group', 'conformance-keys', '--usage', 'SIGN,VERIFY']);
  expect(JSON.parse(stdout)).toMatchObject({ created: IMPOTENT_KEY_ID });
  app = await ProxyApp.start({ runtime: loadConfigFile(configFile), logger: silentLogger });
});

afterAll(async () => {
  await app?.stop(1000);
  rmSync(dir, { recursive: true, force: true });
});

/** The client's three ways to be refused before any key is looked at (every script has them). */
function refusedCases(path: string, body: () => unknown): void {
  it('with an invalid SigV4 access key id: AuthenticationFailedException', async () => {
    expectError(await xks(path, body(), { accessKeyId: `Invalid${cred.accessKeyId}` }), 401, 'AuthenticationFailedException');
  });
  it('with an invalid SigV4 secret: AuthenticationFailedException', async () => {
    expectError(await xks(path, body(), { secretAccessKey: `Invalid${cred.secretAccessKey}` }), 401, 'AuthenticationFailedException');
  });
  it('with an invalid URI prefix: InvalidUriPathException', async () => {
    expectError(await xks(path, body(), { prefix: `${PREFIX}/invalid` }), 404, 'InvalidUriPathException');
  });
}

// From test_get_health_status.
describe('GetHealthStatus (test_get_health_status)', () => {
  it('answers with the fleet details', async () => {
    const r = await xks('health', healthBody());
    expect(r.status).toBe(200);
    expect(r.body.ekmFleetDetails).toEqual([expect.objectContaining({ healthStatus: 'ACTIVE' })]);
  });

  it('without requestMetadata: ValidationException', async () => {
    expectError(await xks('health', '{}'), 400, 'ValidationException');
  });

  it('with an empty requestMetadata: ValidationException', async () => {
    expectError(await xks('health', '{\n    "requestMetadata": {\n    }\n}'), 400, 'ValidationException');
  });

  refusedCases('health', healthBody);
});

// From test_get_key_metadata.
describe('GetKeyMetadata (test_get_key_metadata)', () => {
  it.each(['DescribeKey', 'CreateKey'])('for %s', async (op) => {
    const r = await xks(`keys/${KEY_ID}/metadata`, { requestMetadata: requestMetadata(op) });
    expect(r).toEqual({ status: 200, body: { keySpec: 'AES_256', keyUsage: ['ENCRYPT', 'DECRYPT'], keyStatus: 'ENABLED' } });
  });

  it('without requestMetadata: ValidationException', async () => {
    expectError(await xks(`keys/${KEY_ID}/metadata`, '{}'), 400, 'ValidationException');
  });

  it('with an empty requestMetadata: ValidationException', async () => {
    expectError(await xks(`keys/${KEY_ID}/metadata`, { requestMetadata: {} }), 400, 'ValidationException');
  });

  it('for a key that does not exist: KeyNotFoundException', async () => {
    expectError(await xks('keys/non_existing_key/metadata', { requestMetadata: requestMetadata('DescribeKey') }), 404, 'KeyNotFoundException');
  });

  refusedCases(`keys/${KEY_ID}/metadata`, () => ({ requestMetadata: requestMetadata('DescribeKey') }));
});

// From test_encrypt_decrypt (with utils/test_encrypt_decrypt_utils.sh building the bodies and checking the CDIV).
describe('Encrypt and Decrypt (test_encrypt_decrypt)', () => {
  it('with a key that does not exist: KeyNotFoundException', async () => {
    expectError(await xks('keys/non_existing_key/encrypt', encryptBody(PLAINTEXT)), 404, 'KeyNotFoundException');
  });

  it('without plaintext: ValidationException', async () => {
    expectError(await xks(`keys/${KEY_ID}/encrypt`, encryptBody()), 400, 'ValidationException');
  });

  refusedCases(`keys/${KEY_ID}/encrypt`, () => encryptBody(PLAINTEXT));

  // The script runs this pair twice in a row; once is the same check.
  it('encrypt with AAD, then decrypt without it: InvalidCiphertextException', async () => {
    const s = await sealed(KEY_ID, PLAINTEXT, AAD);
    expectError(await xks(`keys/${KEY_ID}/decrypt`, decryptBody(s)), 400, 'InvalidCiphertextException');
  });

  it('encrypt with AAD, then decrypt with another AAD: InvalidCiphertextException', async () => {
    const s = await sealed(KEY_ID, PLAINTEXT, AAD);
    expectError(await xks(`keys/${KEY_ID}/decrypt`, decryptBody(s, AAD2)), 400, 'InvalidCiphertextException');
  });

  it.each([
    ['without AAD', undefined],
    ['with the same AAD', AAD],
  ])('encrypt and decrypt %s', async (_what, aad) => {
    const s = await sealed(KEY_ID, PLAINTEXT2, aad);
    expect(await xks(`keys/${KEY_ID}/decrypt`, decryptBody(s, aad))).toEqual({ status: 200, body: { plaintext: PLAINTEXT2 } });
  });

  it.each([
    ['with AAD', AAD],
    ['without AAD', undefined],
  ])('encrypt with a CDIV %s: the value checks out, then it decrypts', async (_what, aad) => {
    const s = await sealed(KEY_ID, PLAINTEXT2, aad, 'SHA_256');
    expect(s.ciphertextDataIntegrityValue).toBe(expectedCdiv(s, aad));
    expect(await xks(`keys/${KEY_ID}/decrypt`, decryptBody(s, aad))).toEqual({ status: 200, body: { plaintext: PLAINTEXT2 } });
  });

  it('encrypt and decrypt a large plaintext (4096 bytes) with a large AAD (8192 bytes)', async () => {
    const plaintext = randomBytes(4096).toString('base64');
    const aad = randomBytes(8192).toString('base64');
    const s = await sealed(KEY_ID, plaintext, aad);
    expect(await xks(`keys/${KEY_ID}/decrypt`, decryptBody(s, aad))).toEqual({ status: 200, body: { plaintext } });
  });
});

// From test_encrypt_only_key.
describe('an encrypt-only key (test_encrypt_only_key)', () => {
  it.each([
    ['without AAD', undefined],
    ['with AAD', AAD],
  ])('encrypts %s, and refuses to decrypt: InvalidKeyUsageException', async (_what, aad) => {
    const s = await sealed(ENCRYPT_ONLY_KEY_ID, PLAINTEXT, aad);
    expectError(await xks(`keys/${ENCRYPT_ONLY_KEY_ID}/decrypt`, decryptBody(s, aad)), 400, 'InvalidKeyUsageException');
  });

  // Issue 10 item 2: the CDIV is proven by a decrypt, which this key does not allow.
  it.each([
    ['with AAD', AAD],
    ['without AAD', ''],
  ])('refuses an encrypt with a CDIV %s: InvalidKeyUsageException', async (_what, aad) => {
    const r = await xks(`keys/${ENCRYPT_ONLY_KEY_ID}/encrypt`, encryptBody(PLAINTEXT, aad, 'SHA_256'));
    expectError(r, 400, 'InvalidKeyUsageException');
    expect(r.body.errorMessage).toMatch(/DECRYPT/);
  });
});

/** utils/tests_for_decrypt_only_key.sh: every kind of encrypt is refused (shared by the decrypt-only and impotent scripts). */
function refusesEveryEncrypt(keyId: () => string): void {
  it.each([
    ['with AAD', AAD, undefined],
    ['without AAD', undefined, undefined],
    ['with AAD and CDIV', AAD, 'SHA_256'],
    ['with CDIV but without AAD', '', 'SHA_256'],
  ])('refuses to encrypt %s: InvalidKeyUsageException', async (_what, aad, cdiv) => {
    expectError(await xks(`keys/${keyId()}/encrypt`, encryptBody(PLAINTEXT, aad, cdiv)), 400, 'InvalidKeyUsageException');
  });
}

// From test_decrypt_only_key.
describe('a decrypt-only key (test_decrypt_only_key)', () => {
  refusesEveryEncrypt(() => DECRYPT_ONLY_KEY_ID);

  it('still decrypts (what node:crypto sealed under the same key value, over the spec AAD layout)', async () => {
    const aad = Buffer.from(AAD, 'base64');
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', Buffer.from(testHsm().knownKeyHex, 'hex'), iv);
    // len(aad) as 2 bytes big-endian || aad || len(ciphertextMetadata) as 1 byte (none here).
    c.setAAD(Buffer.concat([Buffer.from([aad.length >> 8, aad.length & 0xff]), aad, Buffer.from([0])]));
    const ciphertext = Buffer.concat([c.update(Buffer.from(PLAINTEXT2, 'base64')), c.final()]);
    const s = { ciphertext: ciphertext.toString('base64'), initializationVector: iv.toString('base64'), authenticationTag: c.getAuthTag().toString('base64') };
    expect(await xks(`keys/${DECRYPT_ONLY_KEY_ID}/decrypt`, decryptBody(s, AAD))).toEqual({ status: 200, body: { plaintext: PLAINTEXT2 } });
  });
});

// From test_impotent_key; issue 10 item 3 (a key with neither ENCRYPT nor DECRYPT, made with xks-admin --usage).
describe('a key that can neither encrypt nor decrypt (test_impotent_key)', () => {
  refusesEveryEncrypt(() => IMPOTENT_KEY_ID);

  it('refuses to decrypt: InvalidKeyUsageException', async () => {
    const s = await sealed(KEY_ID, PLAINTEXT2);
    expectError(await xks(`keys/${IMPOTENT_KEY_ID}/decrypt`, decryptBody(s)), 400, 'InvalidKeyUsageException');
  });

  it('reports its own usages in GetKeyMetadata', async () => {
    const r = await xks(`keys/${IMPOTENT_KEY_ID}/metadata`, { requestMetadata: requestMetadata('DescribeKey') });
    expect(r).toEqual({ status: 200, body: { keySpec: 'AES_256', keyUsage: ['SIGN', 'VERIFY'], keyStatus: 'ENABLED' } });
  });
});

describe('issue 10 conformance beyond the AWS client', () => {
  it('item 1: a health body that is not JSON is a ValidationException', async () => {
    expectError(await xks('health', 'not json at all'), 400, 'ValidationException');
  });

  describe('item 6: odd input fails closed', () => {
    it.each([
      ['at the top level', `{"requestMetadata":${JSON.stringify(requestMetadata('Encrypt'))},"plaintext":"${PLAINTEXT}","plaintext":"${PLAINTEXT2}","encryptionAlgorithm":"AES_GCM"}`],
      ['inside requestMetadata', `{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::444455556666:user/Mallory",${JSON.stringify(requestMetadata('Encrypt')).slice(1)},"plaintext":"${PLAINTEXT}","encryptionAlgorithm":"AES_GCM"}`],
      ['as an escaped twin', `{"requestMetadata":${JSON.stringify(requestMetadata('Encrypt'))},"plaintext":"${PLAINTEXT}","\\u0070laintext":"${PLAINTEXT2}","encryptionAlgorithm":"AES_GCM"}`],
    ])('a duplicated JSON key %s is a ValidationException', async (_where, body) => {
      const r = await xks(`keys/${KEY_ID}/encrypt`, body);
      expectError(r, 400, 'ValidationException');
      expect(r.body.errorMessage).toMatch(/duplicate key "(plaintext|awsPrincipalArn)"/);
    });

    const policedEncrypt = (principal: string) =>
      xks('keys/k/encrypt', encryptBody(PLAINTEXT, undefined, undefined, principal), { prefix: POLICED, ...policed });

    it('a well-formed principal of an allowed account is served (the control case)', async () => {
      expect((await policedEncrypt('arn:aws:iam::123456789012:user/Alice')).status).toBe(200);
    });

    it('an awsPrincipalArn with a leading space matches no allow rule: default deny', async () => {
      const r = await policedEncrypt(' arn:aws:iam::123456789012:user/Alice');
      expectError(r, 403, 'AccessDeniedException');
      expect(r.body.errorMessage).toContain('"default-deny"');
    });

    it('a deny rule on its account still catches a malformed ARN, and is named', async () => {
      const r = await policedEncrypt(' arn:aws:iam::444455556666:user/Mallory');
      expectError(r, 403, 'AccessDeniedException');
      expect(r.body.errorMessage).toContain('"deny-blocked-account"');
    });
  });

  describe('item 7: an AAD of 65,535 bytes, the most the HSM AAD length field holds', () => {
    let big: ProxyApp;
    const c: Credential = newCredential();
    beforeAll(async () => {
      big = await startProxy(
        testConfig([keyStoreWithKeys('big', '/big', [c], [{ id: 'k', label: 'test-key-1' }])], {
          limits: { maxAadBytes: 65535 },
          server: { maxBodyBytes: 256 * 1024 },
        }),
      );
    });
    afterAll(() => big.stop(1000));
    const target = (): Target => ({ port: big.port, prefix: '/big', ...c });

    it('encrypts and decrypts with it when limits.maxAadBytes is 65535', async () => {
      const aad = randomBytes(65535).toString('base64');
      const e = await xks('keys/k/encrypt', encryptBody(PLAINTEXT2, aad), target());
      expect(e.status).toBe(200);
      expect(await xks('keys/k/decrypt', decryptBody(e.body, aad), target())).toEqual({ status: 200, body: { plaintext: PLAINTEXT2 } });
    });

    it('answers one byte more with UnsupportedOperationException, not a 500', async () => {
      const aad = randomBytes(65536).toString('base64');
      expectError(await xks('keys/k/encrypt', encryptBody(PLAINTEXT2, aad), target()), 501, 'UnsupportedOperationException');
    });
  });
});

// From test_negative_mtls, which the client runs whenever MTLS is set: GetHealthStatus over mTLS with
// an expired and with a self-signed client certificate must fail in the handshake, and curl -v must
// show `TLS alert, handshake failure`. The client's own certificates are not copied: these are made
// for the test CA (the expired one by that CA, so that the expiry is its only fault).
describe('mTLS negatives (test_negative_mtls)', () => {
  let pki: Pki;
  let secure: ProxyApp;
  const c: Credential = newCredential();
  beforeAll(async () => {
    pki = makePki();
    secure = await startProxy(
      testConfig([keyStoreWithKeys('mtls', PREFIX, [c], [{ id: KEY_ID, label: 'test-key-1' }])], {
        server: { insecurePlainHttp: false, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, clientCaFile: pki.caCert, allowedClientSubjects: ['cks.kms.us-east-1.amazonaws.com'] } },
      }),
    );
  });
  afterAll(async () => {
    await secure.stop(1000);
    rmSync(pki.dir, { recursive: true, force: true });
  });

  /** The client's run_test over https with MTLS="--key … --cert …" and VERBOSE=-v: what it greps is curl's stdout and stderr together. */
  function health(client: ClientCert, tlsArgs: string[]): Promise<string> {
    const args = [
      `https://localhost:${secure.port}${PREFIX}/kms/xks/v1/health`,
      '--silent', '-v', '--cacert', pki.caCert, ...tlsArgs, '--key', client.key, '--cert', client.cert,
      '-H', 'Content-Type:application/json',
      '--aws-sigv4', 'aws:amz:us-east-1:kms-xks-proxy',
      '--user', `${c.accessKeyId}:${c.secretAccessKey}`,
      '--data-binary', JSON.stringify(healthBody(), null, 4),
    ];
    return new Promise((resolve) => execFile('curl', args, (_err, stdout, stderr) => resolve(`${stdout}\n${stderr}`)));
  }

  // [how, curl's options, the version curl's trace names]
  const versions: [string, string[], string][] = [
    ['as curl negotiates it (TLS 1.3)', [], 'TLSv1.3'],
    ['under TLS 1.2', ['--tlsv1.2', '--tls-max', '1.2'], 'TLSv1.2'],
  ];

  it.each(versions)('GetHealthStatus via mTLS with KMS\'s certificate answers, %s', async (_how, tlsArgs) => {
    expect(await health(pki.client('cks.kms.us-east-1.amazonaws.com'), tlsArgs)).toContain('"healthStatus":');
  });

  it.each(versions)('GetHealthStatus via mTLS with an expired client certificate: TLS alert, handshake failure, %s', async (_how, tlsArgs, version) => {
    const out = await health(pki.client('cks.kms.us-east-1.amazonaws.com', { days: -1 }), tlsArgs);
    expect(out).toMatch(/TLS alert, handshake failure/);
    expect(out).toContain(`${version} (IN), TLS alert, handshake failure`);
    expect(out).not.toContain('"healthStatus":');
  });

  it.each(versions)('GetHealthStatus via mTLS with a self-signed client certificate: TLS alert, handshake failure, %s', async (_how, tlsArgs, version) => {
    const out = await health(pki.selfSigned('cks.kms.us-east-1.amazonaws.com'), tlsArgs);
    expect(out).toMatch(/TLS alert, handshake failure/);
    expect(out).toContain(`${version} (IN), TLS alert, handshake failure`);
    expect(out).not.toContain('"healthStatus":');
  });
});
