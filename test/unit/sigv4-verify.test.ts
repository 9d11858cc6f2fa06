import aws4 from 'aws4';
import { canonicalValue, SERVICE, sha256Hex, verifySigV4, SigV4Policy, SigV4Result } from '../../src/sigv4/verify';

/**
 * The cases test/sigv4.test.ts leaves out, each with the exact reason, on a fixed clock so that the
 * skew boundary is exact. aws4 is the independent signer.
 */
const A = { accessKeyId: 'AAAAAAAAAAAAAAAAAAAAAAAAAA', secretAccessKey: 'FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE' };
const B = { accessKeyId: 'BBBBBBBBBBBBBBBBBBBBBBBBBB', secretAccessKey: 'VU6W2byoiBrhDqNGbx703oL0syCAmhlQgwNUT123456' };
const PATH = '/tenant/kms/xks/v1/keys/k1/encrypt';
const BODY = '{"requestMetadata":{"kmsRequestId":"1","kmsOperation":"Encrypt"},"plaintext":"AA=="}';
const T = Date.UTC(2026, 0, 15, 12, 0, 0);
const amzDate = (ms: number): string => new Date(ms).toISOString().replace(/[:-]|\.\d{3}/g, '');

interface SignOptions {
  at?: number;
  region?: string;
  service?: string;
  cred?: typeof A;
  headers?: Record<string, string>;
  /** Lower-case header names aws4 must leave out of SignedHeaders. */
  unsigned?: string[];
  body?: string;
  method?: string;
}

/** Signs with aws4 and returns the headers as a plain object (name -> value), in the case aws4 wrote them. */
function sign(o: SignOptions = {}): Record<string, string> {
  const req = {
    host: 'xks.example.com',
    path: PATH,
    method: o.method ?? 'POST',
    service: o.service ?? SERVICE,
    region: o.region ?? 'us-east-1',
    body: o.body ?? BODY,
    headers: { 'content-type': 'application/json', 'X-Amz-Date': amzDate(o.at ?? T), ...o.headers } as Record<string, string>,
    extraHeadersToIgnore: Object.fromEntries((o.unsigned ?? []).map((h) => [h, true])),
  };
  aws4.sign(req, o.cred ?? A);
  return Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, String(v)]));
}

const raw = (h: Record<string, string>): string[] => Object.entries(h).flatMap(([k, v]) => [k, v]);

function policy(p: Partial<SigV4Policy> = {}): SigV4Policy {
  return {
    secrets: new Map([
      [A.accessKeyId, Buffer.from(A.secretAccessKey)],
      [B.accessKeyId, Buffer.from(B.secretAccessKey)],
    ]),
    regions: new Set(),
    clockSkewMs: 300_000,
    now: T,
    ...p,
  };
}

function verify(headers: Record<string, string> | string[], o: { body?: string; method?: string; p?: Partial<SigV4Policy> } = {}): SigV4Result {
  return verifySigV4(
    { method: o.method ?? 'POST', path: PATH, rawHeaders: Array.isArray(headers) ? headers : raw(headers), body: Buffer.from(o.body ?? BODY) },
    policy(o.p),
  );
}

const ok = (accessKeyId = A.accessKeyId, region = 'us-east-1'): SigV4Result => ({ ok: true, accessKeyId, region });
/** The reason is the assertion; its kind (the metric label) is checked in test/unit/auth-failures.test.ts. */
const no = (reason: string): unknown => expect.objectContaining({ ok: false, reason });
const withAuth = (h: Record<string, string>, edit: (auth: string) => string): Record<string, string> => ({ ...h, Authorization: edit(h.Authorization as string) });
const signedHeadersOf = (h: Record<string, string>): string => /SignedHeaders=([^,]+)/.exec(h.Authorization as string)![1]!;

describe('SignedHeaders: exactly the listed headers are verified', () => {
  it('accepts what aws4 signs by default and reports the credential and region', () => {
    const h = sign();
    expect(signedHeadersOf(h)).toBe('content-length;content-type;host;x-amz-date');
    expect(verify(h)).toEqual(ok());
  });

  it('accepts the minimal set host;x-amz-date, and then an unsigned header may change', () => {
    const h = sign({ unsigned: ['content-type', 'content-length'] });
    expect(signedHeadersOf(h)).toBe('host;x-amz-date');
    expect(verify(h)).toEqual(ok());
    expect(verify({ ...h, 'content-type': 'text/plain', 'X-Extra': 'added later' })).toEqual(ok());
  });

  it('rejects a change to a signed header value', () => {
    expect(verify({ ...sign(), 'content-type': 'text/plain' })).toEqual(no('signature does not match'));
    expect(verify({ ...sign(), Host: 'other.example.com' })).toEqual(no('signature does not match'));
  });

  it('rejects a SignedHeaders list edited to leave a signed header out', () => {
    const h = withAuth(sign(), (a) => a.replace('content-length;content-type;', 'content-length;'));
    expect(verify(h)).toEqual(no('signature does not match'));
  });

  it('rejects a signed header that is missing from the request, naming it', () => {
    const { 'content-type': _drop, ...rest } = sign();
    expect(verify(rest)).toEqual(no('signed header content-type is missing'));
  });

  it('finds headers whatever the case of their names on the wire', () => {
    const h = sign();
    const shouted = Object.fromEntries(Object.entries(h).map(([k, v]) => [k === 'Authorization' ? k : k.toUpperCase(), v]));
    expect(verify(shouted)).toEqual(ok());
  });

  it('canonicalises a signed value as aws4 does: trimmed, whitespace runs made one space', () => {
    const h = sign({ headers: { 'x-note': '  two  spaces,\ta tab and\u00a0a no-break space  ' } });
    expect(verify(h)).toEqual(ok());
    // Spaces added where a run already is, or at the ends, change nothing once canonical; inside a word they do.
    expect(verify({ ...h, 'x-note': ' two   spaces,\t a tab and \u00a0a no-break space' })).toEqual(ok());
    expect(verify({ ...h, 'x-note': 'two spa ces, a tab and a no-break space' })).toEqual(no('signature does not match'));
  });

  it('joins the values of a repeated signed header with commas, in arrival order', () => {
    const h = sign({ headers: { 'x-note': 'first,second' } });
    const rest = raw(h).filter((_v, i, all) => all[i - (i % 2)] !== 'x-note');
    expect(verify([...rest, 'x-note', 'first', 'X-Note', ' second '])).toEqual(ok());
    expect(verify([...rest, 'x-note', 'second', 'x-note', 'first'])).toEqual(no('signature does not match'));
  });

  it.each(['', ' ', 'plain', 'a b', 'a  b', ' a', 'a ', '\ta', 'a\tb', 'a\r\nb', 'a\u00a0b', 'a\u2003b', 'a\u3000', '\ufeffa', 'x\u0085y', 'a \u00e9 b'])(
    'canonicalValue(%j) is the trimmed value with whitespace runs made one space',
    (v) => {
      expect(canonicalValue(v)).toBe(v.trim().replace(/\s+/g, ' '));
    },
  );

  it('canonicalValue agrees with the regex form for every UTF-16 code unit, alone, inside, at the ends and beside a space', () => {
    const differ: string[] = [];
    for (let c = 0; c < 0x10000; c++) {
      const ch = String.fromCharCode(c);
      for (const v of [ch, `a${ch}b`, `${ch}a`, `a${ch}`, `a ${ch}b`, `a${ch} b`, `${ch}${ch}`]) {
        if (canonicalValue(v) !== v.trim().replace(/\s+/g, ' ')) differ.push(`U+${c.toString(16)} in ${JSON.stringify(v)}`);
      }
    }
    expect(differ).toEqual([]);
  });

  it.each([
    ['unsorted', 'host;content-type;x-amz-date', 'SignedHeaders must be sorted and unique'],
    ['duplicated', 'host;host;x-amz-date', 'SignedHeaders must be sorted and unique'],
    ['upper case', 'Host;x-amz-date', 'SignedHeaders must be lowercase header names'],
    ['empty name', 'host;;x-amz-date', 'SignedHeaders must be lowercase header names'],
    ['without host', 'content-type;x-amz-date', 'SignedHeaders must include host and x-amz-date'],
    ['without x-amz-date', 'content-type;host', 'SignedHeaders must include host and x-amz-date'],
    ['with authorization', 'authorization;host;x-amz-date', 'the Authorization header cannot be signed'],
  ])('rejects a list that is %s', (_what, list, reason) => {
    expect(verify(withAuth(sign(), (a) => a.replace(/SignedHeaders=[^,]+/, `SignedHeaders=${list}`)))).toEqual(no(reason));
  });

  it('rejects a request aws4 signed without host', () => {
    expect(verify(sign({ unsigned: ['host'] }))).toEqual(no('SignedHeaders must include host and x-amz-date'));
  });

  it('rejects a request aws4 signed without x-amz-date', () => {
    expect(verify(sign({ unsigned: ['x-amz-date'] }))).toEqual(no('SignedHeaders must include host and x-amz-date'));
  });
});

describe('host and x-amz-date headers', () => {
  it('rejects a request with no Host header', () => {
    const { Host: _drop, ...rest } = sign();
    expect(verify(rest)).toEqual(no('exactly one Host header is required'));
  });

  it('rejects a request with no X-Amz-Date header', () => {
    const { 'X-Amz-Date': _drop, ...rest } = sign();
    expect(verify(rest)).toEqual(no('exactly one X-Amz-Date header is required'));
  });

  it('rejects a repeated Host or X-Amz-Date header, even with the same value', () => {
    const h = sign();
    expect(verify([...raw(h), 'host', h.Host as string])).toEqual(no('exactly one Host header is required'));
    expect(verify([...raw(h), 'x-amz-date', h['X-Amz-Date'] as string])).toEqual(no('exactly one X-Amz-Date header is required'));
  });

  it.each(['2026-01-15T12:00:00Z', '20260115T120000', '20260132T120000Z', ''])('rejects X-Amz-Date %p as malformed', (value) => {
    expect(verify({ ...sign(), 'X-Amz-Date': value })).toEqual(no('malformed X-Amz-Date'));
  });
});

describe('body hash', () => {
  it('rejects a body other than the one signed', () => {
    expect(verify(sign(), { body: BODY.replace('AA==', 'AQ==') })).toEqual(no('signature does not match'));
    expect(verify(sign(), { body: '' })).toEqual(no('signature does not match'));
    expect(verify(sign(), { body: BODY + ' ' })).toEqual(no('signature does not match'));
  });

  it('accepts a signed x-amz-content-sha256 that is the hash of the body', () => {
    const h = sign({ headers: { 'x-amz-content-sha256': sha256Hex(BODY) } });
    expect(signedHeadersOf(h)).toContain('x-amz-content-sha256');
    expect(verify(h)).toEqual(ok());
  });

  it('rejects an x-amz-content-sha256 that is not the hash of the body received, signed or not', () => {
    // aws4 signs with the claimed hash; the verifier hashes what it received.
    const claimed = sign({ headers: { 'x-amz-content-sha256': sha256Hex('{}') }, body: '{}' });
    expect(verify(claimed)).toEqual(no('x-amz-content-sha256 does not match the body'));
    expect(verify({ ...sign(), 'x-amz-content-sha256': sha256Hex('{}') })).toEqual(no('x-amz-content-sha256 does not match the body'));
    expect(verify({ ...sign(), 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' })).toEqual(no('x-amz-content-sha256 does not match the body'));
    expect(verify({ ...sign(), 'x-amz-content-sha256': sha256Hex(BODY).toUpperCase() })).toEqual(no('x-amz-content-sha256 does not match the body'));
  });

  it('rejects a repeated x-amz-content-sha256 header', () => {
    const h = sign();
    expect(verify([...raw(h), 'x-amz-content-sha256', sha256Hex(BODY), 'x-amz-content-sha256', sha256Hex(BODY)])).toEqual(
      no('x-amz-content-sha256 does not match the body'),
    );
  });

  it('rejects a request verified under another method', () => {
    expect(verify(sign(), { method: 'PUT' })).toEqual(no('signature does not match'));
  });
});

describe('clock skew (±5 minutes)', () => {
  const skewed = no('request time is outside the allowed clock skew');

  it.each([
    ['exactly 5 minutes old', -300_000],
    ['exactly 5 minutes ahead', 300_000],
    ['on time', 0],
  ])('accepts a request signed %s', (_what, offset) => {
    expect(verify(sign({ at: T + offset }))).toEqual(ok());
  });

  it.each([
    ['1 s more than 5 minutes old', -301_000],
    ['1 s more than 5 minutes ahead', 301_000],
    ['a day old', -86_400_000],
  ])('rejects a request signed %s', (_what, offset) => {
    expect(verify(sign({ at: T + offset }))).toEqual(skewed);
  });

  it('measures against the proxy clock to the millisecond', () => {
    const h = sign();
    expect(verify(h, { p: { now: T + 300_000 } })).toEqual(ok());
    expect(verify(h, { p: { now: T + 300_001 } })).toEqual(skewed);
    expect(verify(h, { p: { now: T - 300_001 } })).toEqual(skewed);
  });

  it('follows the configured window', () => {
    const h = sign();
    expect(verify(h, { p: { clockSkewMs: 0 } })).toEqual(ok());
    expect(verify(h, { p: { clockSkewMs: 0, now: T + 1 } })).toEqual(skewed);
  });
});

describe('credential scope', () => {
  it('requires the scope date to be the date of X-Amz-Date, also across midnight', () => {
    const late = Date.UTC(2026, 0, 15, 23, 59, 59);
    const h = sign({ at: late });
    expect(verify(h, { p: { now: late } })).toEqual(ok());
    expect(verify(withAuth(h, (a) => a.replace('/20260115/', '/20260116/')), { p: { now: late } })).toEqual(no('credential scope date does not match X-Amz-Date'));
    const early = Date.UTC(2026, 0, 16, 0, 0, 1);
    expect(verify({ ...h, 'X-Amz-Date': amzDate(early) }, { p: { now: early } })).toEqual(no('credential scope date does not match X-Amz-Date'));
  });

  it.each(['kms', 'KMS-XKS-PROXY', 'kms-xks-proxy2', ''])('rejects service %p', (service) => {
    expect(verify(sign({ service }))).toEqual(no('credential scope service must be kms-xks-proxy'));
  });

  it('accepts only the pinned regions, reporting which one was used', () => {
    const pinned = { regions: new Set(['us-east-1', 'eu-west-1']) };
    expect(verify(sign({ region: 'us-east-1' }), { p: pinned })).toEqual(ok(A.accessKeyId, 'us-east-1'));
    expect(verify(sign({ region: 'eu-west-1' }), { p: pinned })).toEqual(ok(A.accessKeyId, 'eu-west-1'));
    expect(verify(sign({ region: 'ap-south-1' }), { p: pinned })).toEqual(no('credential scope region is not accepted by this key store'));
    expect(verify(sign({ region: 'US-EAST-1' }), { p: pinned })).toEqual(no('credential scope region is not accepted by this key store'));
  });

  it('accepts any well-formed region when none is pinned', () => {
    expect(verify(sign({ region: 'me-central-1' }))).toEqual(ok(A.accessKeyId, 'me-central-1'));
    expect(verify(sign({ region: 'US_EAST_1' }))).toEqual(no('malformed credential scope region'));
  });

  it.each([
    ['four parts', (a: string) => a.replace('/aws4_request', '')],
    ['another terminator', (a: string) => a.replace('/aws4_request', '/aws5_request')],
    ['six parts', (a: string) => a.replace('/aws4_request', '/x/aws4_request')],
  ])('rejects a scope with %s', (_what, edit) => {
    expect(verify(withAuth(sign(), edit))).toEqual(no('malformed credential scope'));
  });
});

describe('credentials', () => {
  it('accepts two live credentials at once, each as itself', () => {
    expect(verify(sign({ cred: A }))).toEqual(ok(A.accessKeyId));
    expect(verify(sign({ cred: B }))).toEqual(ok(B.accessKeyId));
  });

  it("rejects one credential's key id with the other's secret", () => {
    expect(verify(sign({ cred: { accessKeyId: A.accessKeyId, secretAccessKey: B.secretAccessKey } }))).toEqual(no('signature does not match'));
  });

  it('rejects a retired credential once it leaves the map, while the other keeps working', () => {
    const onlyB = { secrets: new Map([[B.accessKeyId, Buffer.from(B.secretAccessKey)]]) };
    expect(verify(sign({ cred: A }), { p: onlyB })).toEqual(no('unknown access key id'));
    expect(verify(sign({ cred: B }), { p: onlyB })).toEqual(ok(B.accessKeyId));
  });

  it('rejects an unknown access key id, and any key id when none is configured', () => {
    expect(verify(sign({ cred: { accessKeyId: 'CCCCCCCCCCCCCCCCCCCCCCCCCC', secretAccessKey: A.secretAccessKey } }))).toEqual(no('unknown access key id'));
    expect(verify(sign(), { p: { secrets: new Map() } })).toEqual(no('unknown access key id'));
  });

  it('never reuses a derived signing key after the secret behind a key id changes', () => {
    const rotated = { secrets: new Map([[A.accessKeyId, Buffer.from(B.secretAccessKey)]]) };
    expect(verify(sign({ cred: A }))).toEqual(ok());
    expect(verify(sign({ cred: A }), { p: rotated })).toEqual(no('signature does not match'));
    expect(verify(sign({ cred: { accessKeyId: A.accessKeyId, secretAccessKey: B.secretAccessKey } }), { p: rotated })).toEqual(ok());
    expect(verify(sign({ cred: A }))).toEqual(ok());
  });
});

describe('Authorization header', () => {
  it('is required, once', () => {
    const { Authorization: auth, ...rest } = sign();
    expect(verify(rest)).toEqual(no('missing Authorization header'));
    expect(verify([...raw(rest), 'Authorization', auth as string, 'authorization', auth as string])).toEqual(no('more than one Authorization header'));
  });

  it.each([
    ['another scheme', () => 'Basic QUJD', 'Authorization is not AWS4-HMAC-SHA256'],
    ['SigV4a', (a: string) => a.replace('AWS4-HMAC-SHA256', 'AWS4-ECDSA-P256-SHA256'), 'Authorization is not AWS4-HMAC-SHA256'],
    ['an extra field', (a: string) => `${a}, Extra=1`, 'Authorization header needs exactly Credential, SignedHeaders and Signature'],
    ['no Signature', (a: string) => a.replace(/, Signature=.*/, ''), 'Authorization header needs exactly Credential, SignedHeaders and Signature'],
    ['a repeated field', (a: string) => `${a}, SignedHeaders=host;x-amz-date`, 'duplicate SignedHeaders in Authorization header'],
    ['a field without "="', (a: string) => `${a}, junk`, 'malformed Authorization header'],
  ])('rejects %s', (_what, edit, reason) => {
    expect(verify(withAuth(sign(), edit))).toEqual(no(reason));
  });

  it.each([
    ['upper-case hex', (s: string) => s.toUpperCase()],
    ['one character short', (s: string) => s.slice(1)],
    ['not hex', (s: string) => 'g' + s.slice(1)],
    ['one bit off', (s: string) => (s[0] === '0' ? '1' : '0') + s.slice(1)],
  ])('rejects a signature that is %s', (_what, edit) => {
    const h = withAuth(sign(), (a) => a.replace(/Signature=([0-9a-f]+)/, (_m, sig: string) => `Signature=${edit(sig)}`));
    expect(verify(h)).toEqual(no('signature does not match'));
  });
});
