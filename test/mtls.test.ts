import { expect } from '@jest/globals';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import tls from 'node:tls';
import { ProxyApp } from '../src/app';
import { buildRuntimeConfig } from '../src/config/load';
import { createLogger } from '../src/log';
import { ClientCert, makePki, Pki } from './support/pki';
import { keyStoreWithKeys, newCredential, testConfig } from './support/proxy';

/**
 * A refused client certificate must look like a failed handshake, and the same one whatever the
 * reason: a fatal handshake_failure alert (what AWS's XKS test client expects), never a completed
 * handshake followed by an empty reply or a reset, and never an alert that tells a prober why. The
 * reason is in the log line and the xks_mtls_refusals_total label. The client identity is checked on
 * the certificate's DNS names (subjectAltName), the CN only for a certificate without any.
 */
type Version = 'TLSv1.2' | 'TLSv1.3';
const KMS = 'cks.kms.us-east-1.amazonaws.com';

describe('mTLS', () => {
  let pki: Pki;
  let app: ProxyApp;
  const lines: string[] = [];
  const clients: Record<string, ClientCert | undefined> = {};

  beforeAll(async () => {
    pki = makePki();
    // Accepted: KMS's name as the CN of a certificate without subjectAltName (the CN fallback), as its
    // only subjectAltName with an empty subject, as a subjectAltName the CN disagrees with, as a wildcard.
    clients.cnOnly = pki.client(KMS);
    clients.sanOnly = pki.client('', { dnsNames: [KMS] });
    clients.sanNotCn = pki.client('evil.example.com', { dnsNames: ['other.example.com', KMS] });
    clients.wildcard = pki.client('', { dnsNames: ['*.kms.us-east-1.amazonaws.com'] });
    // Refused.
    clients.none = undefined;
    clients.unknownCa = pki.client(KMS, 'other');
    clients.selfSigned = pki.selfSigned(KMS);
    clients.expired = pki.client(KMS, { days: -1 });
    clients.subject = pki.client('evil.example.com');
    clients.cnNotSan = pki.client(KMS, { dnsNames: ['evil.example.com'] });
    clients.partialWildcard = pki.client('', { dnsNames: ['c*.kms.us-east-1.amazonaws.com'] });
    clients.purpose = pki.client(KMS, { purpose: 'serverAuth' });
    const config = testConfig([keyStoreWithKeys('m', '/m', [newCredential()], [{ id: 'k', label: 'test-key-1' }])], {
      server: { insecurePlainHttp: false, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, clientCaFile: pki.caCert, allowedClientSubjects: [KMS] } },
    });
    app = await ProxyApp.start({ runtime: buildRuntimeConfig(config), logger: createLogger('info', { write: (s: string) => void lines.push(s) }) });
  });
  afterAll(() => app.stop(1000));

  interface Outcome {
    /** True when the client completed its side of the handshake before the error. */
    handshakeDone: boolean;
    code: string;
  }

  /** A TLS client of exactly this version, presenting c's certificate (if any) to the proxy. */
  function connectOptions(c: ClientCert | undefined, version: Version, more: tls.ConnectionOptions = {}): tls.ConnectionOptions {
    return {
      port: app.port,
      host: '127.0.0.1',
      servername: 'localhost',
      ca: readFileSync(pki.caCert),
      minVersion: version,
      maxVersion: version,
      ...(c ? { cert: readFileSync(c.cert), key: readFileSync(c.key) } : {}),
      ...more,
    };
  }

  function nodeClient(c: ClientCert | undefined, version: Version, more?: tls.ConnectionOptions): Promise<Outcome> {
    return new Promise((resolve) => {
      let handshakeDone = false;
      const s = tls.connect(connectOptions(c, version, more));
      s.once('secureConnect', () => {
        handshakeDone = true;
        s.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
      });
      s.once('data', () => resolve({ handshakeDone, code: 'answered' }));
      s.once('error', (e: NodeJS.ErrnoException) => resolve({ handshakeDone, code: e.code ?? e.message }));
      s.once('close', () => resolve({ handshakeDone, code: 'closed without alert' }));
    });
  }

  /** curl -v, as AWS's test client runs it for its mTLS negatives: stderr carries the TLS trace. */
  function curl(c: ClientCert | undefined, version: Version): Promise<{ exit: number; stderr: string }> {
    const v = version === 'TLSv1.2' ? '1.2' : '1.3';
    const args = ['-sS', '-v', '--max-time', '10', `--tlsv${v}`, '--tls-max', v, '--cacert', pki.caCert, ...(c ? ['--cert', c.cert, '--key', c.key] : []), `https://localhost:${app.port}/healthz`];
    return new Promise((resolve) => {
      execFile('curl', args, (err, _stdout, stderr) => resolve({ exit: err ? Number((err as { code?: number }).code) : 0, stderr }));
    });
  }

  // [client, reason in the log and the metric label]
  const refusals: [string, string][] = [
    ['none', 'no_certificate'],
    ['unknownCa', 'unknown_ca'],
    ['selfSigned', 'self_signed'],
    ['expired', 'expired'],
    ['subject', 'subject_not_allowed'],
    ['cnNotSan', 'subject_not_allowed'],
    ['partialWildcard', 'subject_not_allowed'],
    ['purpose', 'wrong_purpose'],
  ];
  const refused = (name: string): ClientCert | undefined => clients[name];

  it.each(refusals)('TLS 1.2, %s: the handshake fails with handshake_failure', async (name) => {
    expect(await nodeClient(refused(name), 'TLSv1.2')).toEqual({ handshakeDone: false, code: 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE' });
    const r = await curl(refused(name), 'TLSv1.2');
    expect(r.exit).toBe(35);
    expect(r.stderr).toContain('TLSv1.2 (IN), TLS alert, handshake failure (552)');
    expect(r.stderr).toMatch(/curl: \(35\) .*alert handshake failure/);
  });

  it.each(refusals)('TLS 1.3, %s: the first read fails with handshake_failure', async (name) => {
    // TLS 1.3 clients finish before the server has seen their certificate: the alert is the first record they read.
    expect(await nodeClient(refused(name), 'TLSv1.3')).toEqual({ handshakeDone: true, code: 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE' });
    const r = await curl(refused(name), 'TLSv1.3');
    expect(r.exit).toBe(56);
    expect(r.stderr).toContain('TLSv1.3 (IN), TLS alert, handshake failure (552)');
    expect(r.stderr).not.toMatch(/Empty reply|reset by peer/);
  });

  it.each(['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256'])('TLS 1.3 with %s: the alert is protected with that suite', async (suite) => {
    expect(await nodeClient(clients.expired, 'TLSv1.3', { ciphers: suite })).toEqual({ handshakeDone: true, code: 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE' });
    expect(await nodeClient(clients.sanOnly, 'TLSv1.3', { ciphers: suite })).toEqual({ handshakeDone: true, code: 'answered' });
  });

  it('the reason of every refusal is in its log line and in the metric label, never in the alert', async () => {
    const logged = lines
      .join('')
      .split('\n')
      .filter((l) => l.includes('mTLS client refused'))
      .map((l) => JSON.parse(l) as { reason: string; detail: string; protocol: string });
    for (const [name, reason] of refusals) {
      for (const protocol of ['TLSv1.2', 'TLSv1.3']) expect(logged.filter((l) => l.reason === reason && l.protocol === protocol).length).toBeGreaterThan(0);
      void name;
    }
    expect(logged.find((l) => l.reason === 'expired')?.detail).toBe('CERT_HAS_EXPIRED');
    expect(logged.find((l) => l.reason === 'subject_not_allowed')?.detail).toMatch(/evil\.example\.com/);
    const metric = await app.metrics.registry.getSingleMetricAsString('xks_mtls_refusals_total');
    for (const [, reason] of refusals) expect(metric).toMatch(new RegExp(`xks_mtls_refusals_total\\{reason="${reason}"\\} [1-9]`));
  });

  it.each(['cnOnly', 'sanOnly', 'sanNotCn', 'wildcard'])('%s: accepted under TLS 1.2 and 1.3', async (name) => {
    for (const version of ['TLSv1.2', 'TLSv1.3'] as Version[]) {
      expect(await nodeClient(clients[name], version)).toEqual({ handshakeDone: true, code: 'answered' });
      expect((await curl(clients[name], version)).exit).toBe(0);
    }
  });

  it.each(['TLSv1.2', 'TLSv1.3'] as Version[])('%s: an accepted client resumes its session', async (version) => {
    const c = clients.sanOnly as ClientCert;
    const agent = new https.Agent({ maxCachedSessions: 10, keepAlive: false });
    /** One request; `session` resolves once the server's session (ticket) reached the agent's cache. */
    const status = (): { answer: Promise<{ status: number; reused: boolean }>; session: Promise<void> } => {
      let sessionArrived!: () => void;
      const session = new Promise<void>((r) => (sessionArrived = r));
      const answer = new Promise<{ status: number; reused: boolean }>((resolve, reject) => {
        const req = https.request(
          { ...connectOptions(c, version), path: '/healthz', agent },
          (res) => {
            res.resume();
            resolve({ status: res.statusCode ?? 0, reused: (res.socket as tls.TLSSocket).isSessionReused() });
          },
        );
        // The agent caches the session from its own listener, added before this one.
        req.on('socket', (socket) => socket.once('session', () => sessionArrived()));
        req.on('error', reject);
        req.end();
      });
      return { answer, session };
    };
    const first = status();
    expect((await first.answer).status).toBeGreaterThan(0);
    await first.session;
    expect(await status().answer).toEqual({ status: expect.any(Number), reused: true });
  });

  it('a refused client cannot resume a session: it never received a ticket', async () => {
    for (const version of ['TLSv1.2', 'TLSv1.3'] as Version[]) {
      let session: Buffer | undefined;
      await new Promise<void>((resolve) => {
        const s = tls.connect(connectOptions(clients.subject, version));
        s.on('session', (b) => (session = b));
        s.on('error', () => undefined);
        s.once('close', () => resolve());
      });
      expect(session).toBeUndefined();
    }
  });
});
