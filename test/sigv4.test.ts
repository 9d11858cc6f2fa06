import aws4 from 'aws4';
import { parseAmzDate, verifySigV4, SigV4Policy } from '../src/sigv4/verify';

const cred = { accessKeyId: 'AAAAAAAAAAAAAAAAAAAAAAAAAA', secretAccessKey: 'FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE' };
const other = { accessKeyId: 'BBBBBBBBBBBBBBBBBBBBBBBBBB', secretAccessKey: 'VU6W2byoiBrhDqNGbx703oL0syCAmhlQgwNUT123456' };
const path = '/tenant/kms/xks/v1/keys/k1/encrypt';
const body = '{"requestMetadata":{"kmsRequestId":"1","kmsOperation":"Encrypt"}}';

interface Signed {
  headers: Record<string, string>;
}

function sign(opts: { body?: string; region?: string; service?: string; date?: Date; c?: typeof cred; headers?: Record<string, string> } = {}): Signed {
  const req = {
    host: 'xks.example.com',
    path,
    method: 'POST',
    service: opts.service ?? 'kms-xks-proxy',
    region: opts.region ?? 'us-east-1',
    body: opts.body ?? body,
    headers: { 'content-type': 'application/json', ...opts.headers } as Record<string, string>,
  };
  if (opts.date) req.headers['X-Amz-Date'] = opts.date.toISOString().replace(/[:-]|\.\d{3}/g, '');
  aws4.sign(req, opts.c ?? cred);
  return { headers: req.headers };
}

const raw = (h: Record<string, string | number>): string[] => Object.entries(h).flatMap(([k, v]) => [k, String(v)]);

function policy(now = Date.now(), regions: string[] = []): SigV4Policy {
  return {
    secrets: new Map([
      [cred.accessKeyId, Buffer.from(cred.secretAccessKey)],
      [other.accessKeyId, Buffer.from(other.secretAccessKey)],
    ]),
    regions: new Set(regions),
    clockSkewMs: 300_000,
    now,
  };
}

function verify(s: Signed, opts: { body?: string; rawHeaders?: string[]; p?: SigV4Policy; reqPath?: string } = {}) {
  return verifySigV4(
    { method: 'POST', path: opts.reqPath ?? path, rawHeaders: opts.rawHeaders ?? raw(s.headers), body: Buffer.from(opts.body ?? body) },
    opts.p ?? policy(),
  );
}

describe('SigV4 verification against aws4 as the signer', () => {
  it('accepts a request aws4 signed', () => {
    expect(verify(sign())).toEqual({ ok: true, accessKeyId: cred.accessKeyId, region: 'us-east-1' });
  });

  it('accepts either of two live credentials', () => {
    expect(verify(sign({ c: other }))).toMatchObject({ ok: true, accessKeyId: other.accessKeyId });
  });

  it.each([
    ['a different body', { body: body.replace('Encrypt', 'Decrypt') }],
    ['a different path', { reqPath: path.replace('k1', 'k2') }],
  ])('rejects a valid signature for %s', (_name, opts) => {
    expect(verify(sign(), opts)).toMatchObject({ ok: false, reason: 'signature does not match' });
  });

  it('rejects a wrong secret', () => {
    const forged = sign({ c: { accessKeyId: cred.accessKeyId, secretAccessKey: other.secretAccessKey } });
    expect(verify(forged).ok).toBe(false);
  });

  it('rejects an unknown access key id', () => {
    const s = sign({ c: { accessKeyId: 'CCCCCCCCCCCCCCCCCCCCCCCCCC', secretAccessKey: cred.secretAccessKey } });
    expect(verify(s)).toMatchObject({ ok: false, reason: 'unknown access key id' });
  });

  it.each([
    ['service', { service: 'kms' }, /service/],
    ['region not accepted', { region: 'eu-west-1' }, /region/],
  ])('rejects the wrong %s in the scope', (_n, opts, reason) => {
    const s = sign(opts);
    const r = verify(s, { p: policy(Date.now(), ['us-east-1']) });
    expect(r.ok).toBe(false);
    expect(r.ok === false && r.reason).toMatch(reason);
  });

  it('enforces the clock-skew window both ways', () => {
    const now = Date.now();
    expect(verify(sign({ date: new Date(now - 299_000) })).ok).toBe(true);
    expect(verify(sign({ date: new Date(now - 301_000) })).ok).toBe(false);
    expect(verify(sign({ date: new Date(now + 301_000) })).ok).toBe(false);
  });

  it('requires the scope date to match X-Amz-Date', () => {
    const s = sign();
    const auth = s.headers.Authorization as string;
    const day = /\/(\d{8})\//.exec(auth)![1]!;
    const prev = String(Number(day) - 1);
    s.headers.Authorization = auth.replace(`/${day}/`, `/${prev}/`);
    expect(verify(s)).toMatchObject({ ok: false, reason: 'credential scope date does not match X-Amz-Date' });
  });

  it('requires host and x-amz-date among the signed headers', () => {
    const s = sign();
    s.headers.Authorization = (s.headers.Authorization as string).replace(/SignedHeaders=[^,]+/, 'SignedHeaders=content-type;x-amz-date');
    expect(verify(s).ok).toBe(false);
  });

  it('rejects duplicate X-Amz-Date and Host headers', () => {
    const s = sign();
    expect(verify(s, { rawHeaders: [...raw(s.headers), 'X-Amz-Date', '20200101T000000Z'] }).ok).toBe(false);
    expect(verify(s, { rawHeaders: [...raw(s.headers), 'Host', 'evil.example.com'] }).ok).toBe(false);
  });

  it('hashes the body itself and rejects a mismatching x-amz-content-sha256', () => {
    const s = sign({ headers: { 'x-amz-content-sha256': '0'.repeat(64) } });
    expect(verify(s)).toMatchObject({ ok: false, reason: 'x-amz-content-sha256 does not match the body' });
  });

  it('rejects a missing or non-SigV4 Authorization header', () => {
    const s = sign();
    const { Authorization: _a, ...rest } = s.headers;
    expect(verify({ headers: rest }).ok).toBe(false);
    expect(verify({ headers: { ...rest, Authorization: 'Basic abc' } }).ok).toBe(false);
  });

  it('rejects a truncated signature without throwing', () => {
    const s = sign();
    s.headers.Authorization = (s.headers.Authorization as string).replace(/Signature=([0-9a-f]+)/, (_m, sig: string) => `Signature=${sig.slice(0, 10)}`);
    expect(verify(s)).toMatchObject({ ok: false, reason: 'signature does not match' });
  });

  it('canonicalises header values (trims, folds spaces) like the signer', () => {
    const s = sign({ headers: { 'x-custom': '  a   b  ' } });
    expect(verify(s)).toMatchObject({ ok: true });
  });
});

describe('X-Amz-Date parsing', () => {
  it.each([
    ['20240229T235959Z', Date.UTC(2024, 1, 29, 23, 59, 59)],
    ['20230229T000000Z', NaN],
    ['20230230T000000Z', NaN],
    ['20230101T240000Z', NaN],
    ['20230101T000060Z', NaN],
    ['2023-01-01T00:00:00Z', NaN],
    ['20230101T000000', NaN],
  ])('%s', (v, expected) => {
    expect(parseAmzDate(v)).toBe(expected);
  });
});
