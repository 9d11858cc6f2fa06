import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { ProxyApp } from '../src/app';
import { keyMetadata, keyStoreWithKeys, newCredential, startProxy, testConfig } from './support/proxy';

const run = promisify(execFile);
const cred = newCredential();
let app: ProxyApp;

beforeAll(async () => {
  app = await startProxy(testConfig([keyStoreWithKeys('demo', '/demo', [cred], [{ id: 'k', label: 'test-key-1' }])]));
});
afterAll(() => app.stop(1000));

/** curl's own SigV4 signer, as in the README and spec Appendix D. */
async function curl(path: string, body: unknown, user = `${cred.accessKeyId}:${cred.secretAccessKey}`): Promise<{ status: number; json: Record<string, unknown> }> {
  const { stdout } = await run('curl', [
    '-s', '-w', '\n%{http_code}',
    '--aws-sigv4', 'aws:amz:us-east-1:kms-xks-proxy',
    '--user', user,
    '-H', 'Content-Type: application/json',
    '--data', JSON.stringify(body),
    `http://127.0.0.1:${app.port}${path}`,
  ]);
  const lines = stdout.trimEnd().split('\n');
  const status = Number(lines.pop());
  return { status, json: JSON.parse(lines.join('\n')) as Record<string, unknown> };
}

describe('curl --aws-sigv4 as the client', () => {
  it('gets the health status', async () => {
    const r = await curl('/demo/kms/xks/v1/health', { requestMetadata: { kmsRequestId: 'c1', kmsOperation: 'KmsHealthCheck' } });
    expect(r.status).toBe(200);
    expect(r.json.ekmFleetDetails).toEqual([expect.objectContaining({ healthStatus: 'ACTIVE' })]);
  });

  it('encrypts and decrypts', async () => {
    const e = await curl('/demo/kms/xks/v1/keys/k/encrypt', {
      requestMetadata: keyMetadata('GenerateDataKey'),
      plaintext: 'SGVsbG8gV29ybGQh',
      encryptionAlgorithm: 'AES_GCM',
    });
    expect(e.status).toBe(200);
    const d = await curl('/demo/kms/xks/v1/keys/k/decrypt', { requestMetadata: keyMetadata('Decrypt'), encryptionAlgorithm: 'AES_GCM', ...e.json });
    expect(d).toEqual({ status: 200, json: { plaintext: 'SGVsbG8gV29ybGQh' } });
  });

  it('is refused with a wrong secret', async () => {
    const r = await curl('/demo/kms/xks/v1/health', { requestMetadata: { kmsRequestId: 'c2', kmsOperation: 'KmsHealthCheck' } }, `${cred.accessKeyId}:${'A'.repeat(44)}`);
    expect(r).toMatchObject({ status: 401, json: { errorName: 'AuthenticationFailedException' } });
  });
});
