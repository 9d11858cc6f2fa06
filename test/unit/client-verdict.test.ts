import { X509Certificate } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { judgeClient } from '../../src/http/client-verdict';
import { configSchema } from '../../src/config/schema';
import { makePki, Pki } from '../support/pki';

/** The verdict on a client certificate, apart from the TLS connection (test/mtls.test.ts has those). */
const KMS = 'cks.kms.us-east-1.amazonaws.com';
let pki: Pki;
let kms: X509Certificate;
beforeAll(() => {
  pki = makePki();
  kms = new X509Certificate(readFileSync(pki.client(KMS).cert));
});
afterAll(() => rmSync(pki.dir, { recursive: true, force: true }));
const x509 = (c: { cert: string }): X509Certificate => new X509Certificate(readFileSync(c.cert));

it.each([
  ['CERT_HAS_EXPIRED', 'expired'],
  ['CERT_NOT_YET_VALID', 'not_yet_valid'],
  ['DEPTH_ZERO_SELF_SIGNED_CERT', 'self_signed'],
  ['SELF_SIGNED_CERT_IN_CHAIN', 'self_signed'],
  ['UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'unknown_ca'],
  ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'unknown_ca'],
  ['CERT_REVOKED', 'revoked'],
  ['INVALID_PURPOSE', 'wrong_purpose'],
  ['CERT_SIGNATURE_FAILURE', 'invalid_certificate'],
])('a chain refused with %s is refused as %s, the code kept as the detail', (code, reason) => {
  expect(judgeClient({ authorized: false, authorizationError: code, certificate: kms }, [KMS])).toEqual({ ok: false, reason, detail: code });
});

it('no certificate is no_certificate, whatever Node reports as the chain error', () => {
  expect(judgeClient({ authorized: false, authorizationError: 'UNABLE_TO_GET_ISSUER_CERT' }, [])).toMatchObject({ ok: false, reason: 'no_certificate' });
});

it('DNS names in subjectAltName decide; the CN only for a certificate without any', () => {
  const ok = (c: { cert: string }, allowed = [KMS]) => judgeClient({ authorized: true, certificate: x509(c) }, allowed);
  expect(ok(pki.client(KMS))).toEqual({ ok: true });
  expect(ok(pki.client('', { dnsNames: [KMS] }))).toEqual({ ok: true });
  expect(ok(pki.client('evil.example.com', { dnsNames: [KMS] }))).toEqual({ ok: true });
  expect(ok(pki.client(KMS, { dnsNames: ['evil.example.com'] }))).toEqual({ ok: false, reason: 'subject_not_allowed', detail: 'subjectAltName DNS:evil.example.com' });
  expect(ok(pki.client('evil.example.com'))).toEqual({ ok: false, reason: 'subject_not_allowed', detail: 'subject CN=evil.example.com' });
  // Names compare as DNS names do: case-insensitively.
  expect(ok(pki.client('', { dnsNames: ['CKS.KMS.us-east-1.amazonaws.com'] }))).toEqual({ ok: true });
  // No allowed subjects: any certificate from the CA.
  expect(ok(pki.client('evil.example.com'), [])).toEqual({ ok: true });
});

describe('server.tls.allowedClientSubjects', () => {
  const parse = (allowed: string[]) =>
    configSchema.safeParse({
      server: { tls: { certFile: 'c', keyFile: 'k', clientCaFile: 'ca', allowedClientSubjects: allowed } },
      hsm: { modulePath: 'm', tokenLabel: 't', pin: { value: 'p' } },
      keyStores: [{ name: 'k', credentials: [{ accessKeyId: 'A'.repeat(20), secretAccessKey: { value: 'x' } }] }],
    });
  it('takes DNS names', () => {
    expect(parse([KMS, 'load-tester']).success).toBe(true);
  });
  it.each(['CN=cks.kms.us-east-1.amazonaws.com', 'a b', '*.kms.us-east-1.amazonaws.com', 'x.'])('refuses %j with a message that says what it wants', (name) => {
    const r = parse([name]);
    expect(r.success).toBe(false);
    expect(r.error?.issues[0]?.message).toBe('must be a DNS name, e.g. cks.kms.us-east-1.amazonaws.com');
  });
});
