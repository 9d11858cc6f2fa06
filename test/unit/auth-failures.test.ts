import aws4 from 'aws4';
import { AuthenticationFailed, AUTH_FAILED_MESSAGE } from '../../src/http/auth-failures';
import { FloodLog, FloodSummary } from '../../src/http/flood-log';
import { AuthFailureKind, completeSigV4, preverifySigV4, SERVICE, SigV4Policy } from '../../src/sigv4/verify';

const A = { accessKeyId: 'AAAAAAAAAAAAAAAAAAAAAAAAAA', secretAccessKey: 'FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE' };
const PATH = '/t/kms/xks/v1/health';
const BODY = '{"requestMetadata":{"kmsRequestId":"1","kmsOperation":"KmsHealthCheck"}}';
const T = Date.UTC(2026, 0, 15, 12, 0, 0);
const amzDate = (ms: number): string => new Date(ms).toISOString().replace(/[:-]|\.\d{3}/g, '');

function signedRaw(o: { at?: number; region?: string; secret?: string; accessKeyId?: string; headers?: Record<string, string> } = {}): string[] {
  const req = {
    host: 'xks.example.com',
    path: PATH,
    method: 'POST',
    service: SERVICE,
    region: o.region ?? 'us-east-1',
    body: BODY,
    headers: { 'X-Amz-Date': amzDate(o.at ?? T), ...o.headers } as Record<string, string>,
  };
  aws4.sign(req, { accessKeyId: o.accessKeyId ?? A.accessKeyId, secretAccessKey: o.secret ?? A.secretAccessKey });
  return Object.entries(req.headers).flatMap(([k, v]) => [k, String(v)]);
}

const policy: SigV4Policy = { secrets: new Map([[A.accessKeyId, Buffer.from(A.secretAccessKey)]]), regions: new Set(['us-east-1']), clockSkewMs: 300_000, now: T };

describe('the header check and the body check share one parse', () => {
  it('passes what the headers establish, and the body check completes it', () => {
    const pre = preverifySigV4(signedRaw(), policy);
    expect(pre).toMatchObject({ ok: true, accessKeyId: A.accessKeyId, region: 'us-east-1' });
    if (!pre.ok) return;
    expect(completeSigV4(pre, { method: 'POST', path: PATH, body: Buffer.from(BODY) })).toEqual({ ok: true, accessKeyId: A.accessKeyId, region: 'us-east-1' });
    expect(completeSigV4(pre, { method: 'POST', path: PATH, body: Buffer.from(BODY + ' ') })).toMatchObject({ ok: false, kind: 'signature' });
  });

  it.each<[string, string[], AuthFailureKind]>([
    ['no Authorization', signedRaw().filter((_, i, a) => a[i - (i % 2)] !== 'Authorization'), 'malformed'],
    ['another region', signedRaw({ region: 'eu-west-1' }), 'scope'],
    ['a stale date', signedRaw({ at: T - 301_000 }), 'clock_skew'],
    ['an unknown access key id', signedRaw({ accessKeyId: 'CCCCCCCCCCCCCCCCCCCCCCCCCC' }), 'unknown_access_key'],
  ])('refuses %s from the headers alone, with its kind', (_n, raw, kind) => {
    expect(preverifySigV4(raw, policy)).toMatchObject({ ok: false, kind });
  });

  it('leaves the body hash to the body check', () => {
    const pre = preverifySigV4(signedRaw({ headers: { 'x-amz-content-sha256': '0'.repeat(64) } }), policy);
    expect(pre.ok).toBe(true);
    if (pre.ok) expect(completeSigV4(pre, { method: 'POST', path: PATH, body: Buffer.from(BODY) })).toMatchObject({ ok: false, kind: 'body_hash' });
  });

  it('gives one message for every failure and keeps a bounded detail', () => {
    const unknown = new AuthenticationFailed({ ok: false, kind: 'unknown_access_key', reason: 'unknown access key id' });
    const long = new AuthenticationFailed({ ok: false, kind: 'signed_headers', reason: `signed header ${'x'.repeat(5000)} is missing` });
    expect(unknown.toBody()).toEqual({ errorName: 'AuthenticationFailedException', errorMessage: AUTH_FAILED_MESSAGE });
    expect(long.toBody()).toEqual(unknown.toBody());
    expect(long.detail.length).toBeLessThanOrEqual(170);
  });
});

describe('FloodLog', () => {
  let now = 0;
  let summaries: FloodSummary[] = [];
  const make = (): FloodLog<AuthFailureKind> => new FloodLog({ perSecond: 5, summaryEveryMs: 10_000, summary: (s) => summaries.push(s), now: () => now });

  beforeEach(() => {
    now = 1_000_000;
    summaries = [];
    jest.useFakeTimers();
  });
  afterEach(() => jest.useRealTimers());

  it('admits a burst, then the rate, and summarises the rest by reason once per interval', () => {
    const log = make();
    let admitted = 0;
    // 1,000 failures a second for 10 s.
    for (let i = 0; i < 10_000; i++) {
      now += 1;
      if (log.admit('ks', i % 10 === 0 ? 'unknown_access_key' : 'signature')) admitted += 1;
    }
    expect(admitted).toBeGreaterThanOrEqual(5 + 9 * 5);
    expect(admitted).toBeLessThanOrEqual(5 + 10 * 5 + 1);
    expect(summaries).toEqual([]);
    jest.advanceTimersByTime(10_000);
    expect(summaries).toHaveLength(1);
    const [s] = summaries;
    expect(s!.keyStore).toBe('ks');
    expect(s!.suppressed).toBe(10_000 - admitted);
    const counts = Object.fromEntries(s!.reasons.split(',').map((p) => p.split(':')).map(([k, n]): [string, number] => [k ?? '', Number(n)]));
    expect(counts.signature! + counts.unknown_access_key!).toBe(s!.suppressed);
    expect(counts.unknown_access_key).toBeGreaterThan(900);
    // Nothing more suppressed: no further summaries and no timer left behind.
    jest.advanceTimersByTime(60_000);
    expect(summaries).toHaveLength(1);
    expect(jest.getTimerCount()).toBe(0);
  });

  it('keeps key stores apart: a flood on one leaves the other its detailed lines', () => {
    const log = make();
    for (let i = 0; i < 100; i++) log.admit('flooded', 'signature');
    expect(log.admit('quiet', 'scope')).toBe(true);
    log.flush();
    expect(summaries.map((s) => [s.keyStore, s.suppressed])).toEqual([['flooded', 95]]);
  });
});
