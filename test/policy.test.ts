import type { ProxyApp } from '../src/app';
import type { RuleConfig } from '../src/config/schema';
import { keyStoreWithKeys, newCredential, send, startProxy, testConfig, KMS_KEY_ARN, PRINCIPAL } from './support/proxy';

/**
 * Every policy condition, allow and deny, through real signed HTTP requests. For each condition the
 * proxy has one group whose only rule (allow or deny + allow-all) names a value; a request with that
 * value and one without are sent.
 */
type Meta = Record<string, string | undefined>;
interface Case {
  name: string;
  rule: Omit<RuleConfig, 'id' | 'effect'>;
  match: Meta;
  miss: Meta;
}

const base: Meta = {
  awsPrincipalArn: PRINCIPAL,
  kmsKeyArn: KMS_KEY_ARN,
  kmsOperation: 'Encrypt',
  kmsRequestId: 'r',
};

const cases: Case[] = [
  { name: 'principal-exact', rule: { principals: [PRINCIPAL] }, match: {}, miss: { awsPrincipalArn: 'arn:aws:iam::123456789012:user/Bob' } },
  { name: 'principal-wildcard', rule: { principals: ['arn:aws:iam::123456789012:role/app-*'] }, match: { awsPrincipalArn: 'arn:aws:iam::123456789012:role/app-web' }, miss: { awsPrincipalArn: 'arn:aws:iam::123456789012:role/admin' } },
  { name: 'principal-account', rule: { principalAccounts: ['123456789012'] }, match: {}, miss: { awsPrincipalArn: 'arn:aws:iam::210987654321:user/Alice' } },
  { name: 'source-vpc', rule: { sourceVpcs: ['vpc-1234'] }, match: { awsSourceVpc: 'vpc-1234' }, miss: { awsSourceVpc: 'vpc-9999' } },
  { name: 'source-vpce', rule: { sourceVpces: ['vpce-0abc*'] }, match: { awsSourceVpce: 'vpce-0abc123' }, miss: {} },
  { name: 'via-service', rule: { viaServices: ['ebs.*.amazonaws.com'] }, match: { kmsViaService: 'ebs.us-east-1.amazonaws.com' }, miss: { kmsViaService: 's3.us-east-1.amazonaws.com' } },
  { name: 'kms-operation', rule: { kmsOperations: ['GenerateDataKey*'] }, match: { kmsOperation: 'GenerateDataKeyWithoutPlaintext' }, miss: { kmsOperation: 'ReEncrypt' } },
  { name: 'key-account', rule: { keyAccounts: ['123456789012'] }, match: {}, miss: { kmsKeyArn: 'arn:aws:kms:us-east-1:111122223333:key/x' } },
  { name: 'key-region', rule: { keyRegions: ['us-east-1'] }, match: {}, miss: { kmsKeyArn: 'arn:aws:kms:eu-west-1:123456789012:key/x' } },
];

const cred = newCredential();
let app: ProxyApp;

beforeAll(async () => {
  const stores = cases.flatMap((c, i) => [
    keyStoreWithKeys(`allow-${c.name}`, `/allow${i}`, [newCredential()], [{ id: 'k', label: 'test-key-1' }], {
      policy: { rules: [{ id: `allow-${c.name}`, effect: 'allow', ...c.rule }] },
    }),
    keyStoreWithKeys(`deny-${c.name}`, `/deny${i}`, [newCredential()], [{ id: 'k', label: 'test-key-1' }], {
      policy: { rules: [{ id: `deny-${c.name}`, effect: 'deny', ...c.rule }, { id: 'allow-rest', effect: 'allow' }] },
    }),
  ]);
  // One credential for all of them keeps the test short; the proxy allows it only because each is a different key store.
  const config = testConfig(stores);
  config.keyStores.forEach((ks, i) => (ks.credentials = [{ accessKeyId: i === 0 ? cred.accessKeyId : newCredential().accessKeyId, secretAccessKey: { value: cred.secretAccessKey } }]));
  app = await startProxy(config);
  credentials = config.keyStores.map((ks) => ({ accessKeyId: ks.credentials[0]!.accessKeyId, secretAccessKey: cred.secretAccessKey }));
});
let credentials: { accessKeyId: string; secretAccessKey: string }[] = [];

afterAll(() => app.stop(1000));

async function metadata(storeIndex: number, prefix: string, meta: Meta): Promise<{ status: number; body: Record<string, unknown> }> {
  const requestMetadata = { ...base, ...meta };
  return send(app.port, `${prefix}/kms/xks/v1/keys/k/metadata`, { requestMetadata }, credentials[storeIndex]);
}

describe.each(cases.map((c, i) => [c.name, c, i] as const))('condition %s', (_name, c, i) => {
  it('allow rule: matching request allowed, other request denied by default', async () => {
    expect((await metadata(2 * i, `/allow${i}`, c.match)).status).toBe(200);
    const r = await metadata(2 * i, `/allow${i}`, c.miss);
    expect(r).toMatchObject({ status: 403, body: { errorName: 'AccessDeniedException' } });
    expect(r.body.errorMessage).toContain('default-deny');
  });

  it('deny rule: matching request denied (naming the rule) even though allow-all follows, other request allowed', async () => {
    const r = await metadata(2 * i + 1, `/deny${i}`, c.match);
    expect(r).toMatchObject({ status: 403, body: { errorName: 'AccessDeniedException' } });
    expect(r.body.errorMessage).toContain(`deny-${c.name}`);
    expect((await metadata(2 * i + 1, `/deny${i}`, c.miss)).status).toBe(200);
  });
});

describe('policy scope', () => {
  it('never applies to GetHealthStatus', async () => {
    // the allow-principal-exact store would deny Bob; health carries no principal and is not evaluated
    const r = await send(app.port, '/allow0/kms/xks/v1/health', { requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' } }, credentials[0]);
    expect(r.status).toBe(200);
  });

  it('applies to Encrypt and Decrypt as well as GetKeyMetadata', async () => {
    const body = {
      requestMetadata: { ...base, awsPrincipalArn: 'arn:aws:iam::123456789012:user/Bob' },
      plaintext: 'AA==',
      encryptionAlgorithm: 'AES_GCM',
    };
    expect((await send(app.port, '/allow0/kms/xks/v1/keys/k/encrypt', body, credentials[0])).status).toBe(403);
    const dec = { ...body, ciphertext: 'AA==', initializationVector: 'AAAAAAAAAAAAAAAA', authenticationTag: 'AAAAAAAAAAAAAAAAAAAAAA==' };
    expect((await send(app.port, '/allow0/kms/xks/v1/keys/k/decrypt', dec, credentials[0])).status).toBe(403);
  });

  it('lets an unknown kmsOperation through validation; the policy decides', async () => {
    expect((await metadata(2 * 6, '/allow6', { kmsOperation: 'GenerateDataKeyFutureVariant' })).status).toBe(200);
    expect((await metadata(2 * 6, '/allow6', { kmsOperation: 'BulkDecrypt' })).status).toBe(403);
  });
});
