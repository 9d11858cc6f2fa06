import aws4 from 'aws4';
import fc from 'fast-check';
import { amzDate, signRequest } from '../../src/sigv4/sign';
import { SERVICE, verifySigV4 } from '../../src/sigv4/verify';

/**
 * The proxy's own signer (src/sigv4/sign.ts, used by the warm-up) against aws4, the independent
 * signer the other suites use: for the same request, time and credential, both must write the same
 * Authorization header; and what it signs, the verifier accepts.
 */
const CRED = { accessKeyId: 'AAAAAAAAAAAAAAAAAAAAAAAAAA', secretAccessKey: 'FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE' };
const T = Date.UTC(2026, 0, 15, 12, 0, 0);

interface Case {
  path: string;
  body: string;
  headers: Record<string, string>;
  region: string;
  at: number;
}

function withAws4(c: Case): Record<string, string> {
  const req = { host: 'xks.example.com:8443', path: c.path, method: 'POST', service: SERVICE, region: c.region, body: c.body, headers: { ...c.headers, 'X-Amz-Date': amzDate(c.at) } };
  aws4.sign(req, CRED);
  return Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k.toLowerCase(), String(v)]));
}

function withOurs(c: Case): Record<string, string> {
  return signRequest({ method: 'POST', host: 'xks.example.com:8443', path: c.path, body: c.body, headers: c.headers }, { accessKeyId: CRED.accessKeyId, secret: Buffer.from(CRED.secretAccessKey) }, c.region, c.at);
}

const base = (): Case => ({
  path: '/tenant/kms/xks/v1/keys/k1/encrypt',
  body: '{"requestMetadata":{"kmsRequestId":"1","kmsOperation":"Encrypt"},"plaintext":"AA=="}',
  // aws4 adds these two when absent; naming them keeps both signers on the same header set.
  headers: { 'content-type': 'application/json', 'content-length': '81' },
  region: 'us-east-1',
  at: T,
});

test('writes the Authorization header aws4 writes for a warm-up request', () => {
  const ours = withOurs(base());
  expect(ours.authorization).toBe(withAws4(base()).authorization);
  expect(ours.authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=A{26}\/20260115\/us-east-1\/kms-xks-proxy\/aws4_request, SignedHeaders=content-length;content-type;host;x-amz-date, Signature=[0-9a-f]{64}$/);
  expect(ours['x-amz-date']).toBe('20260115T120000Z');
});

test('agrees with aws4 on any path, body, extra headers (odd case and whitespace), region and time', () => {
  // "." and ".." are dot segments, which aws4 resolves (the router refuses them as key ids).
  const unreserved = fc.stringMatching(/^[A-Za-z0-9._~-]{1,12}$/).filter((s) => s !== '.' && s !== '..');
  const headerName = fc.stringMatching(/^x-[a-z0-9-]{1,10}$/).filter((n) => n !== 'x-amz-date' && n !== 'x-amzn-trace-id');
  fc.assert(
    fc.property(
      fc.array(unreserved, { minLength: 1, maxLength: 5 }),
      fc.string({ maxLength: 200 }),
      fc.dictionary(headerName, fc.stringMatching(/^[ \t]*[!-~]([ !-~\t]{0,20}[!-~])?[ \t]*$/), { maxKeys: 3 }),
      fc.boolean(),
      fc.stringMatching(/^[a-z]{2}-[a-z]{4,9}-[1-9]$/),
      fc.integer({ min: Date.UTC(2000, 0, 1), max: Date.UTC(2099, 11, 31) }),
      (segments, body, extra, upper, region, at) => {
        const headers: Record<string, string> = { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) };
        for (const [k, v] of Object.entries(extra)) headers[upper ? k.toUpperCase() : k] = v;
        const c: Case = { path: `/${segments.join('/')}`, body, headers, region, at };
        expect(withOurs(c).authorization).toBe(withAws4(c).authorization);
      },
    ),
    { numRuns: 300 },
  );
});

test('what it signs, the verifier accepts; a changed byte it refuses', () => {
  const c = base();
  const headers = withOurs(c);
  const policy = { secrets: new Map([[CRED.accessKeyId, Buffer.from(CRED.secretAccessKey)]]), regions: new Set(['us-east-1']), clockSkewMs: 300_000, now: T };
  const rawHeaders = Object.entries(headers).flat();
  expect(verifySigV4({ method: 'POST', path: c.path, rawHeaders, body: Buffer.from(c.body) }, policy)).toEqual({ ok: true, accessKeyId: CRED.accessKeyId, region: 'us-east-1' });
  expect(verifySigV4({ method: 'POST', path: c.path, rawHeaders, body: Buffer.from(c.body.replace('AA==', 'AB==')) }, policy)).toMatchObject({ ok: false, kind: 'signature' });
});
