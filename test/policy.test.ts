import type { ProxyApp } from '../src/app';
import { keyStoreWithKeys, newCredential, send, startProxy, testConfig, KMS_KEY_ARN, PRINCIPAL } from './support/proxy';

/**
 * The policy on the HTTP path: a decision becomes 403 AccessDeniedException naming the rule, on every key
 * operation and never on GetHealthStatus. Each condition and the decision order are unit-tested on
 * evaluate() itself in test/unit/policy-evaluate.test.ts.
 */
const BOB = 'arn:aws:iam::123456789012:user/Bob';
const OUTSIDER = 'arn:aws:iam::210987654321:user/Eve';
const P = '/policy/kms/xks/v1';

const cred = newCredential();
let app: ProxyApp;

beforeAll(async () => {
  const store = keyStoreWithKeys('policy', '/policy', [cred], [{ id: 'k', label: 'test-key-1' }], {
    policy: {
      rules: [
        { id: 'deny-bob', effect: 'deny', principals: [BOB] },
        { id: 'allow-account', effect: 'allow', principalAccounts: ['123456789012'] },
      ],
    },
  });
  app = await startProxy(testConfig([store]));
});

afterAll(() => app.stop(1000));

const requestMetadata = (principal: string, kmsOperation: string): Record<string, string> => ({
  awsPrincipalArn: principal,
  kmsKeyArn: KMS_KEY_ARN,
  kmsOperation,
  kmsRequestId: 'r',
});
const metadata = (principal: string, op = 'DescribeKey') => send(app.port, `${P}/keys/k/metadata`, { requestMetadata: requestMetadata(principal, op) }, cred);
const encrypt = (principal: string) =>
  send(app.port, `${P}/keys/k/encrypt`, { requestMetadata: requestMetadata(principal, 'Encrypt'), plaintext: 'AAEC', encryptionAlgorithm: 'AES_GCM' }, cred);

describe('policy over HTTP', () => {
  it('answers 200 when an allow rule matches', async () => {
    expect((await metadata(PRINCIPAL)).status).toBe(200);
    // KMS may add operations: an unknown kmsOperation passes validation and the policy decides.
    expect((await metadata(PRINCIPAL, 'SomeFutureKmsOperation')).status).toBe(200);
    const r = await encrypt(PRINCIPAL);
    expect(r.status).toBe(200);
    expect(r.body).toHaveProperty('ciphertext');
  });

  it('answers 403 AccessDeniedException naming the deny rule that matched', async () => {
    const r = await metadata(BOB);
    expect(r).toMatchObject({ status: 403, body: { errorName: 'AccessDeniedException' } });
    expect(r.body.errorMessage).toContain('"deny-bob"');
  });

  it('answers 403 naming default-deny when no allow rule matches', async () => {
    const r = await metadata(OUTSIDER);
    expect(r).toMatchObject({ status: 403, body: { errorName: 'AccessDeniedException' } });
    expect(r.body.errorMessage).toContain('"default-deny"');
  });

  it('applies to Encrypt and Decrypt as well as GetKeyMetadata', async () => {
    expect(await encrypt(BOB)).toMatchObject({ status: 403, body: { errorName: 'AccessDeniedException' } });
    const dec = {
      requestMetadata: requestMetadata(BOB, 'Decrypt'),
      ciphertext: 'AA==',
      encryptionAlgorithm: 'AES_GCM',
      initializationVector: 'AAAAAAAAAAAAAAAA',
      authenticationTag: 'AAAAAAAAAAAAAAAAAAAAAA==',
    };
    expect(await send(app.port, `${P}/keys/k/decrypt`, dec, cred)).toMatchObject({ status: 403, body: { errorName: 'AccessDeniedException' } });
  });

  it('never applies to GetHealthStatus, even for a principal a rule denies', async () => {
    const r = await send(app.port, `${P}/health`, { requestMetadata: { ...requestMetadata(BOB, 'KmsHealthCheck'), kmsRequestId: 'h' } }, cred);
    expect(r.status).toBe(200);
  });
});
