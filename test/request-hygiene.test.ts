import dc from 'node:diagnostics_channel';
import http from 'node:http';
import net from 'node:net';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import aws4 from 'aws4';
import { ProxyApp } from '../src/app';
import { buildRuntimeConfig } from '../src/config/load';
import { createLogger } from '../src/log';
import { faultyModule } from '../testbed/faulty-module';
import { ManualClock } from './support/clock';
import { until } from './support/promises';
import { b64, Credential, keyMetadata, keyStoreWithKeys, newCredential, send, testConfig } from './support/proxy';

/**
 * Unauthenticated and misbehaving clients over real sockets: what the proxy refuses before reading a
 * body, how it closes, when it says 100 Continue, what a client abort and a flood of bad signatures
 * leave in the metrics, the request log and the audit trail.
 */
const cred = newCredential();
const stranger = newCredential();
const dir = mkdtempSync(join(tmpdir(), 'xks-hygiene-'));
const auditFile = join(dir, 'audit.log');
const lines: string[] = [];
const P = '/h/kms/xks/v1';
const MAX_BODY = 64 * 1024;
let app: ProxyApp;
const { faults, create } = faultyModule();
/**
 * The proxies' wall clock for their refusal logs (10 detailed lines per key store per second, a burst of
 * 10): it stands still within a test, so a budget is exact whatever this machine's speed, and a second
 * passes before each, so every test starts with a full budget whatever ran before it.
 */
const clock = new ManualClock();
beforeEach(() => clock.advance(1000));

beforeAll(async () => {
  const config = testConfig([keyStoreWithKeys('h', '/h', [cred], [{ id: 'k', label: 'test-key-1' }], { keyStore: { regions: ['us-east-1'] } })], { audit: { file: auditFile } });
  const logger = createLogger('info', { write: (s: string) => void lines.push(s) });
  app = await ProxyApp.start({ runtime: buildRuntimeConfig(config), logger, createModule: create, now: clock.now });
});

afterAll(async () => {
  await app.stop(1000);
  rmSync(dir, { recursive: true, force: true });
});

const health = JSON.stringify({ requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' } });
const encrypt = (plaintext: string): string => JSON.stringify({ requestMetadata: keyMetadata('Encrypt'), plaintext: b64(plaintext), encryptionAlgorithm: 'AES_GCM' });

interface HeadOptions {
  path?: string;
  c?: Credential;
  region?: string;
  /** The body the signature covers (its length is the declared Content-Length unless overridden). */
  body?: string;
  headers?: Record<string, string>;
  /** Transfer-Encoding: chunked instead of a Content-Length. */
  chunked?: boolean;
}

/** A signed request head (request line and headers, no body), as bytes for a raw socket. */
function signedHead(o: HeadOptions = {}): string {
  const body = o.body ?? health;
  const req = {
    host: `127.0.0.1:${app.port}`,
    path: o.path ?? `${P}/health`,
    method: 'POST',
    service: 'kms-xks-proxy',
    region: o.region ?? 'us-east-1',
    body,
    headers: {
      'content-type': 'application/json',
      ...(o.chunked ? { 'transfer-encoding': 'chunked' } : { 'content-length': String(Buffer.byteLength(body)) }),
      ...o.headers,
    } as Record<string, string>,
    extraHeadersToIgnore: o.chunked ? { 'content-length': true } : {},
  };
  aws4.sign(req, o.c ?? cred);
  if (o.chunked) delete req.headers['Content-Length'];
  const head = Object.entries(req.headers).map(([k, v]) => `${k}: ${String(v)}\r\n`);
  return `POST ${req.path} HTTP/1.1\r\n${head.join('')}\r\n`;
}

/** A raw connection that records what the server sent and whether it closed. */
class Raw {
  readonly socket: net.Socket;
  received = '';
  closed = false;
  private readonly closedP: Promise<void>;

  constructor(port = app.port) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.on('data', (d: Buffer) => (this.received += d.toString('latin1')));
    this.socket.on('error', () => undefined);
    this.closedP = new Promise((resolve) => this.socket.on('close', () => resolve()));
    void this.closedP.then(() => (this.closed = true));
  }

  async connected(): Promise<this> {
    if (!this.socket.connecting) return this;
    await new Promise((resolve) => this.socket.once('connect', resolve));
    return this;
  }

  write(data: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(data, (e) => (e ? reject(e) : resolve())));
  }

  /** True once the server has sent `pattern`; false if the connection closes or `ms` pass first. */
  waitFor(pattern: RegExp, ms = 3000): Promise<boolean> {
    return new Promise((resolve) => {
      const done = (found: boolean): void => {
        clearTimeout(timer);
        this.socket.off('data', check);
        resolve(found);
      };
      // After the constructor's listener, which appends to what was received.
      const check = (): void => void (pattern.test(this.received) && done(true));
      const timer = setTimeout(() => done(pattern.test(this.received)), ms);
      this.socket.on('data', check);
      void this.closedP.then(() => done(pattern.test(this.received)));
      check();
    });
  }

  /** Resolves once the server closed the connection; rejects after `ms`. */
  whenClosed(ms = 3000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`connection still open after ${ms} ms`)), ms)));
    return Promise.race([this.closedP, late]).finally(() => clearTimeout(timer));
  }

  /** The JSON body of the first complete response. */
  json(): Record<string, unknown> {
    const at = this.received.indexOf('\r\n\r\n', this.received.lastIndexOf('HTTP/1.1 '));
    return JSON.parse(this.received.slice(at + 4)) as Record<string, unknown>;
  }
}

/** Resolves when the proxy's HTTP server has parsed the head of a request for `path` (node:http's own diagnostics channel). */
function headReceived(path: string): Promise<void> {
  return new Promise((resolve) => {
    const seen = (m: unknown): void => {
      if ((m as { request: http.IncomingMessage }).request.url !== path) return;
      dc.unsubscribe('http.server.request.start', seen);
      resolve();
    };
    dc.subscribe('http.server.request.start', seen);
  });
}

/** Resolves when the HSM starts a customer encrypt (its AAD is never empty; the background health check's is). */
function hsmEncryptStarted(): Promise<void> {
  return new Promise((resolve) => {
    faults.inspect = (method, args) => {
      if (method === 'C_EncryptInit' && (args[1] as { parameter: { aad: Buffer } }).parameter.aad.length > 0) {
        faults.inspect = undefined;
        resolve();
      }
      return undefined;
    };
  });
}

/** The request log's lines so far ('xks request': written once it is known whether the answer arrived). */
const requestLogLines = (): number => logLines().filter((l) => l.msg === 'xks request').length;

async function counter(name: 'authFailures' | 'clientAborts' | 'requests', labels: Record<string, string>): Promise<number> {
  const { values } = await app.metrics[name].get();
  return values.filter((v) => Object.entries(labels).every(([k, x]) => (v.labels as Record<string, unknown>)[k] === x)).reduce((n, v) => n + v.value, 0);
}

/** Writes the refusal logs' summaries now: what stop() does (their timer would take 10 s). */
const flushRefusalLogs = (proxy: ProxyApp): void => (proxy as unknown as { flushPipeline(): void }).flushPipeline();

const auditLines = (): Record<string, unknown>[] =>
  readFileSync(auditFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
const logLines = (): Record<string, unknown>[] => lines.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);

describe('refusals before the body is read', () => {
  it.each([
    ['an unknown access key id', { c: stranger }, 'unknown_access_key'],
    ['a region the key store does not accept', { region: 'eu-west-1' }, 'scope'],
    ['a date outside the skew window', { headers: { 'X-Amz-Date': '20200101T000000Z' } }, 'clock_skew'],
  ])('%s: 401 with Connection: close while the declared 60,000-byte body is still unsent', async (_n, o, kind) => {
    const before = await counter('authFailures', { key_store: 'h', reason: kind });
    const raw = await new Raw().connected();
    // The declared body is never sent: the answer can only come from the headers.
    await raw.write(signedHead({ ...o, body: 'x'.repeat(60_000) }));
    await raw.whenClosed();
    expect(raw.received).toMatch(/^HTTP\/1\.1 401 /);
    expect(raw.received).toMatch(/\r\nconnection: close\r\n/i);
    expect(raw.json()).toEqual({ errorName: 'AuthenticationFailedException', errorMessage: 'SigV4 authentication failed' });
    expect(await counter('authFailures', { key_store: 'h', reason: kind })).toBe(before + 1);
  });

  it('control: valid headers wait for the declared body (no answer, no close)', async () => {
    const raw = await new Raw().connected();
    await raw.write(signedHead({ body: 'x'.repeat(60_000) }));
    // Valid headers: the proxy waits for the body. Its first answer is about the body (not JSON), so
    // nothing was answered or closed before the body came.
    await raw.write('x'.repeat(60_000));
    expect(await raw.waitFor(/^HTTP\/1\.1 \d{3} [^]*\r\n\r\n\{[^}]*\}/)).toBe(true);
    expect(raw.received).toMatch(/^HTTP\/1\.1 400 /);
    expect(raw.json()).toMatchObject({ errorName: 'ValidationException' });
    expect(raw.closed).toBe(false);
    raw.socket.destroy();
  });

  it('a signature that does not cover host and x-amz-date is refused from the headers', async () => {
    const raw = await new Raw().connected();
    const head = signedHead({ body: 'x'.repeat(60_000) }).replace(/SignedHeaders=[^,]+/, 'SignedHeaders=content-length;content-type');
    await raw.write(head);
    await raw.whenClosed();
    expect(raw.received).toMatch(/^HTTP\/1\.1 401 /);
  });
});

describe('oversized bodies', () => {
  it('a declared Content-Length over the limit: 501 and the connection closed, body unread', async () => {
    const raw = await new Raw().connected();
    await raw.write(signedHead({ body: 'x'.repeat(MAX_BODY + 1) }));
    await raw.whenClosed();
    expect(raw.received).toMatch(/^HTTP\/1\.1 501 /);
    expect(raw.received).toMatch(/\r\nconnection: close\r\n/i);
    expect(raw.json()).toMatchObject({ errorName: 'UnsupportedOperationException' });
  });

  it('with Expect: 100-continue: 501 without a 100 Continue first', async () => {
    const raw = await new Raw().connected();
    await raw.write(signedHead({ body: 'x'.repeat(10 * 1024 * 1024), headers: { expect: '100-continue' } }));
    await raw.whenClosed();
    expect(raw.received).toMatch(/^HTTP\/1\.1 501 /);
    expect(raw.received).not.toMatch(/100 Continue/);
  });

  it('with Expect: 100-continue and a bad credential: 401 without a 100 Continue first', async () => {
    const raw = await new Raw().connected();
    await raw.write(signedHead({ c: stranger, body: 'x'.repeat(1000), headers: { expect: '100-continue' } }));
    await raw.whenClosed();
    expect(raw.received).toMatch(/^HTTP\/1\.1 401 /);
    expect(raw.received).not.toMatch(/100 Continue/);
  });

  it('a chunked body growing past the limit: 501, then the connection closes while the client keeps sending', async () => {
    const raw = await new Raw().connected();
    await raw.write(signedHead({ chunked: true }));
    const chunk = Buffer.alloc(16 * 1024, 'x');
    const framed = Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]);
    let sent = 0;
    // 64 MiB is a thousand times the limit: a proxy that read and discarded it all would still be reading.
    try {
      while (!raw.closed && sent < 64 * 1024 * 1024) {
        await raw.write(framed);
        sent += chunk.length;
      }
    } catch {
      // EPIPE / ECONNRESET: the proxy closed the connection, which is the point.
    }
    await raw.whenClosed();
    expect(raw.received).toMatch(/^HTTP\/1\.1 501 /);
    expect(sent).toBeLessThan(64 * 1024 * 1024);
  });

  it('a legitimate request with Expect: 100-continue gets 100 Continue, then its 200', async () => {
    const raw = await new Raw().connected();
    const body = encrypt('hello');
    await raw.write(signedHead({ path: `${P}/keys/k/encrypt`, body, headers: { expect: '100-continue' } }));
    expect(await raw.waitFor(/^HTTP\/1\.1 100 Continue\r\n\r\n/)).toBe(true);
    expect(raw.received).not.toMatch(/HTTP\/1\.1 [2-5]\d\d/);
    await raw.write(body);
    expect(await raw.waitFor(/HTTP\/1\.1 200 OK[\s\S]*"ciphertext"/)).toBe(true);
    expect(raw.closed).toBe(false);
    raw.socket.destroy();
  });
});

describe('a client that aborts mid-body', () => {
  it('is counted as a client abort: not InternalException, no ERROR line, no latency sample, audited as undelivered', async () => {
    const internal = await counter('requests', { key_store: 'h', error_name: 'InternalException' });
    const aborts = await counter('clientAborts', { key_store: 'h', stage: 'body' });
    const samples = (await app.metrics.requestSeconds.get()).values.filter((v) => v.metricName?.endsWith('_count')).reduce((n, v) => n + v.value, 0);
    const abortedBefore = auditLines().filter((l) => l.outcome === 'ClientAborted').length;
    const body = encrypt('x'.repeat(3000));
    const raw = await new Raw().connected();
    const reading = headReceived(`${P}/keys/k/encrypt`);
    await raw.write(signedHead({ path: `${P}/keys/k/encrypt`, body: body }));
    await raw.write(body.slice(0, 1000));
    await reading;
    raw.socket.destroy();

    const bodyAborts = (): Promise<number> => counter('clientAborts', { key_store: 'h', stage: 'body' });
    expect(await until(bodyAborts, (n) => n > aborts, 3000)).toBe(aborts + 1);
    expect(await counter('requests', { key_store: 'h', error_name: 'InternalException' })).toBe(internal);
    const after = (await app.metrics.requestSeconds.get()).values.filter((v) => v.metricName?.endsWith('_count')).reduce((n, v) => n + v.value, 0);
    expect(after).toBe(samples);

    const audited = auditLines().filter((l) => l.outcome === 'ClientAborted').slice(abortedBefore);
    expect(audited).toHaveLength(1);
    expect(audited[0]).toMatchObject({ event: 'key-operation', keyStore: 'h', operation: 'Encrypt', clientAborted: 'body', delivered: false });
    expect(audited[0]!.status).toBeUndefined();
    const logged = logLines();
    expect(logged.filter((l) => l.outcome === 'ClientAborted')).toHaveLength(abortedBefore + 1);
    expect(logged.filter((l) => (l.level as number) >= 50)).toEqual([]);
  });

  it('a client that closes before its answer: processed and counted as such, audited as undelivered', async () => {
    const ok = { key_store: 'h', operation: 'Encrypt', error_name: 'none' };
    const success = await counter('requests', ok);
    const aborts = await counter('clientAborts', { key_store: 'h', stage: 'answer' });
    const body = encrypt('late');
    // Real time: the HSM call lasts 150 ms, and the client leaves while it runs.
    faults.delayMs = 150;
    try {
      const raw = await new Raw().connected();
      const inHsm = hsmEncryptStarted();
      await raw.write(signedHead({ path: `${P}/keys/k/encrypt`, body }) + body);
      await inHsm;
      raw.socket.destroy();
      const answerAborts = (): Promise<number> => counter('clientAborts', { key_store: 'h', stage: 'answer' });
      expect(await until(answerAborts, (n) => n > aborts, 3000)).toBe(aborts + 1);
    } finally {
      faults.delayMs = 0;
      faults.inspect = undefined;
    }
    // The HSM work was done: it counts as the proxy's success, with its latency.
    expect(await counter('requests', ok)).toBe(success + 1);
    // The request's line was written before the answer left; the follow-up says it never arrived.
    const [line, followUp] = auditLines().slice(-2);
    expect(line).toMatchObject({ event: 'key-operation', operation: 'Encrypt', outcome: 'success', status: 200 });
    expect(followUp).toMatchObject({ event: 'answer-not-delivered', operation: 'Encrypt', kmsRequestId: line!.kmsRequestId, status: 200 });
  });

  it('audits a delivered answer before it leaves, with no follow-up line', async () => {
    const logged = requestLogLines();
    const r = await send(app.port, `${P}/health`, JSON.parse(health), cred);
    expect(r.status).toBe(200);
    // The request log line comes once delivery is known, from the same pass as a follow-up audit line would.
    expect(await until(requestLogLines, (n) => n > logged, 3000)).toBe(logged + 1);
    const last = auditLines().pop();
    expect(last).toMatchObject({ event: 'key-operation', operation: 'GetHealthStatus', status: 200 });
    expect(last!.delivered).toBeUndefined();
  });
});

describe('401 answers', () => {
  it('are identical for an unknown access key id and a wrong signature; the log keeps which', async () => {
    const unknown = await send(app.port, `${P}/health`, JSON.parse(health), stranger);
    const forged = await send(app.port, `${P}/health`, JSON.parse(health), { accessKeyId: cred.accessKeyId, secretAccessKey: stranger.secretAccessKey });
    const tampered = await send(app.port, `${P}/health`, JSON.parse(health), cred, { tamperBody: (b) => b.replace('"h"', '"i"') });
    for (const r of [unknown, forged, tampered]) expect(r.status).toBe(401);
    expect(forged.body).toEqual(unknown.body);
    expect(tampered.body).toEqual(unknown.body);
    expect(unknown.body).toEqual({ errorName: 'AuthenticationFailedException', errorMessage: 'SigV4 authentication failed' });
    const details = logLines()
      .filter((l) => l.outcome === 'AuthenticationFailedException')
      .slice(-3)
      .map((l) => [l.authFailure, l.authDetail]);
    expect(details).toEqual([
      ['unknown_access_key', 'unknown access key id'],
      ['signature', 'signature does not match'],
      ['signature', 'signature does not match'],
    ]);
  });
});

describe('a flood of bad signatures', () => {
  const N = 2000;
  const forger = (): Credential => ({ accessKeyId: cred.accessKeyId, secretAccessKey: stranger.secretAccessKey });

  function sendForged(agent: http.Agent): Promise<number> {
    const req = { host: `127.0.0.1:${app.port}`, path: `${P}/health`, method: 'POST', service: 'kms-xks-proxy', region: 'us-east-1', body: health, headers: { 'content-type': 'application/json' } };
    aws4.sign(req, forger());
    return new Promise((resolve, reject) => {
      const r = http.request({ host: '127.0.0.1', port: app.port, path: req.path, method: 'POST', headers: req.headers, agent }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      r.on('error', reject);
      r.end(health);
    });
  }

  it(`counts all ${N} in the metric while the audit trail and log stay small, then writes one summary`, async () => {
    const before = await counter('authFailures', { key_store: 'h', reason: 'signature' });
    const auditBefore = auditLines().length;
    const logBefore = logLines().length;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    let next = 0;
    const statuses: number[] = [];
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < N) {
          next += 1;
          statuses.push(await sendForged(agent));
        }
      }),
    );
    agent.destroy();
    expect(statuses.filter((s) => s === 401)).toHaveLength(N);
    expect(await counter('authFailures', { key_store: 'h', reason: 'signature' })).toBe(before + N);

    // 10 detailed lines a second after a burst of 10, whatever the rate of failures: on the proxy's
    // clock, which stood still through the flood, the burst.
    const detailed = auditLines().length - auditBefore;
    expect(detailed).toBe(10);
    expect(logLines().length - logBefore).toBe(10);

    // One summary line counts what was left out, with its reason: written every 10 s while failures are
    // suppressed (its timer is FloodLog's, test/unit/auth-failures.test.ts), and at stop, as here.
    flushRefusalLogs(app);
    const summary = auditLines().slice(auditBefore).find((l) => l.event === 'auth-failures-suppressed');
    expect(summary).toMatchObject({ keyStore: 'h', suppressed: N - detailed, reasons: `signature:${N - detailed}` });
    expect(logLines().slice(logBefore).filter((l) => l.msg === 'authentication failures suppressed')).toHaveLength(1);
    expect(readFileSync(auditFile).length).toBeLessThan(64 * 1024);
  }, 30_000);
});

describe('a request shed while the event loop has a standing queue', () => {
  // A proxy with shedding on (testConfig turns it off), whose guard's sampler is stopped and fed late
  // samples by hand: it stays "overloaded" for exactly this block, whatever this machine's load.
  let shedding: ProxyApp;
  const shedAudit = join(dir, 'shed-audit.log');
  const shedLog: string[] = [];
  const shedAuditLines = (): Record<string, unknown>[] => readFileSync(shedAudit, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  const shedLogLines = (): Record<string, unknown>[] => shedLog.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  const shedTotal = async (): Promise<number> => {
    const { values } = await shedding.metrics.requests.get();
    return values.filter((v) => v.labels.key_store === 'h' && v.labels.error_name === 'ThrottlingException').reduce((n, v) => n + v.value, 0);
  };

  beforeAll(async () => {
    const config = testConfig([keyStoreWithKeys('h', '/h', [cred], [{ id: 'k', label: 'test-key-1' }])], { audit: { file: shedAudit }, limits: { eventLoopShedMs: 100 } });
    shedding = await ProxyApp.start({ runtime: buildRuntimeConfig(config), logger: createLogger('info', { write: (s: string) => void shedLog.push(s) }), createModule: create, now: clock.now });
    shedding.overload.stop();
    const now = performance.now();
    for (const due of [now - 400, now - 250, now - 100]) shedding.overload.sample(150, due);
    expect(shedding.overload.eventLoopOverloaded()).toBe(true);
  });
  afterAll(() => shedding.stop(1000));

  it('is refused before its signature is checked, and its body is read so that the connection stays open', async () => {
    const raw = await new Raw(shedding.port).connected();
    const body = encrypt('shed me');
    await raw.write(signedHead({ path: `${P}/keys/k/encrypt`, body }) + body);
    expect(await raw.waitFor(/^HTTP\/1\.1 429 [^]*\r\n\r\n\{[^}]*\}/)).toBe(true);
    expect(raw.json()).toEqual({ errorName: 'ThrottlingException', errorMessage: 'the proxy is overloaded; retry later' });
    expect(raw.received).not.toMatch(/connection: close/i);
    // The right access key id with a wrong secret would be a 401 if the signature were checked; on the same connection.
    await raw.write(signedHead({ path: `${P}/keys/k/encrypt`, body, c: { accessKeyId: cred.accessKeyId, secretAccessKey: stranger.secretAccessKey } }) + body);
    expect(await raw.waitFor(/HTTP\/1\.1 429[^]*HTTP\/1\.1 429 [^]*\r\n\r\n\{[^}]*\}/)).toBe(true);
    expect(raw.closed).toBe(false);
    raw.socket.destroy();
  });

  it('still refuses bad headers first, unread and closed: a shed body is drained only for a client whose headers passed', async () => {
    const raw = await new Raw(shedding.port).connected();
    await raw.write(signedHead({ path: `${P}/keys/k/encrypt`, body: 'x'.repeat(60_000), c: stranger }));
    await raw.whenClosed();
    expect(raw.received).toMatch(/^HTTP\/1\.1 401 /);
  });

  it('counts a client that leaves while its shed body is drained as a bounded shed, not a full line each', async () => {
    const logBefore = shedLogLines().length;
    const aborted = async (): Promise<number> => (await shedding.metrics.clientAborts.get()).values.filter((v) => v.labels.key_store === 'h').reduce((n, v) => n + v.value, 0);
    const before = await aborted();
    for (let i = 0; i < 30; i++) {
      const raw = await new Raw(shedding.port).connected();
      await raw.write(signedHead({ path: `${P}/keys/k/encrypt`, body: 'y'.repeat(1000) }) + 'y'.repeat(10));
      raw.socket.destroy();
      await raw.whenClosed();
    }
    // All 30 counted as gone, and so logged or not (the metric and the log are written in the same pass).
    expect(await until(aborted, (n) => n >= before + 30, 3000)).toBe(before + 30);
    // Only the detail budget (a burst of 10, the clock standing still) of the 30 got a line.
    expect(shedLogLines().length - logBefore).toBe(10);
  });

  it('answers a client waiting for 100 Continue without it, and closes', async () => {
    const raw = await new Raw(shedding.port).connected();
    await raw.write(signedHead({ path: `${P}/keys/k/encrypt`, body: encrypt('never sent'), headers: { expect: '100-continue' } }));
    await raw.whenClosed();
    expect(raw.received).toMatch(/^HTTP\/1\.1 429 /);
    expect(raw.received).not.toMatch(/100 Continue/);
  });

  it('still answers GetHealthStatus', async () => {
    expect(await send(shedding.port, `${P}/health`, JSON.parse(health), cred)).toMatchObject({ status: 200 });
  });

  const flush = (): void => flushRefusalLogs(shedding);

  it('counts every shed in the metric, and bounds the log and audit lines like authentication failures', async () => {
    flush(); // what earlier tests left to summarise
    const before = await shedTotal();
    const auditBefore = shedAuditLines().length;
    const logBefore = shedLogLines().length;
    const n = 60;
    const statuses = await Promise.all(Array.from({ length: n }, () => send(shedding.port, `${P}/keys/k/encrypt`, JSON.parse(encrypt('x')), cred).then((r) => r.status)));
    expect(statuses.every((st) => st === 429)).toBe(true);
    expect(await shedTotal()).toBe(before + n);
    const detailed = shedAuditLines().slice(auditBefore).filter((l) => l.outcome === 'ThrottlingException').length;
    expect(detailed).toBe(10);
    expect(shedLogLines().length - logBefore).toBe(detailed);
    flush();
    const summary = shedAuditLines().slice(auditBefore).find((l) => l.event === 'shed-requests-suppressed');
    expect(summary).toMatchObject({ keyStore: 'h', suppressed: n - detailed, reasons: `event_loop:${n - detailed}` });
    expect(shedLogLines().slice(logBefore).filter((l) => l.msg === 'shed requests suppressed')).toHaveLength(1);
  });
});
