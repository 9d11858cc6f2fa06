import { execFile, execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { join } from 'node:path';
import tls from 'node:tls';
import type { ProxyApp } from '../src/app';
import { makePki, Pki } from './support/pki';
import { keyStoreWithKeys, newCredential, startProxy, testConfig } from './support/proxy';

/**
 * A refused client certificate must look like a failed handshake: a fatal TLS alert naming the
 * reason, never a completed handshake followed by an empty reply or a reset.
 */
type Version = 'TLSv1.2' | 'TLSv1.3';
interface Client {
  cert?: string;
  key?: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: 'pipe' });
}

/**
 * A client certificate from the test CA: `days: -1` ended yesterday (notAfter before notBefore is fine
 * for OpenSSL); `purpose: 'serverAuth'` is the wrong purpose for a client.
 */
function caSignedClient(pki: Pki, name: string, o: { days: number; purpose: 'clientAuth' | 'serverAuth' }): Client {
  const d = pki.dir;
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=cks.kms.us-east-1.amazonaws.com', '-keyout', `${name}.key`, '-out', `${name}.csr`], d);
  writeFileSync(join(d, `${name}.ext`), `extendedKeyUsage=${o.purpose}\n`);
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', String(o.days), '-extfile', `${name}.ext`, '-out', `${name}.pem`], d);
  return { cert: join(d, `${name}.pem`), key: join(d, `${name}.key`) };
}

function selfSignedClient(pki: Pki): Client {
  const d = pki.dir;
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=cks.kms.us-east-1.amazonaws.com', '-addext', 'extendedKeyUsage=clientAuth', '-keyout', 'self.key', '-out', 'self.pem'], d);
  return { cert: join(d, 'self.pem'), key: join(d, 'self.key') };
}

describe('mTLS refusals are TLS alerts', () => {
  let pki: Pki;
  let app: ProxyApp;
  const clients: Record<string, Client> = {};

  beforeAll(async () => {
    pki = makePki();
    clients.good = pki.client('cks.kms.us-east-1.amazonaws.com');
    clients.unknownCa = pki.client('cks.kms.us-east-1.amazonaws.com', 'other');
    clients.selfSigned = selfSignedClient(pki);
    clients.expired = caSignedClient(pki, 'expired', { days: -1, purpose: 'clientAuth' });
    clients.subject = pki.client('evil.example.com');
    clients.purpose = caSignedClient(pki, 'purpose', { days: 2, purpose: 'serverAuth' });
    clients.none = {};
    const cred = newCredential();
    app = await startProxy(
      testConfig([keyStoreWithKeys('m', '/m', [cred], [{ id: 'k', label: 'test-key-1' }])], {
        server: {
          insecurePlainHttp: false,
          tls: { certFile: pki.serverCert, keyFile: pki.serverKey, clientCaFile: pki.caCert, allowedClientSubjects: ['cks.kms.us-east-1.amazonaws.com'] },
        },
      } as never),
    );
  });
  afterAll(() => app.stop(1000));

  interface Outcome {
    /** True when the client completed its side of the handshake before the error. */
    handshakeDone: boolean;
    code: string;
  }

  /** A TLS client of exactly this version, presenting c's certificate (if any) to the proxy. */
  function connectOptions(c: Client, version: Version): tls.ConnectionOptions {
    return {
      port: app.port,
      host: '127.0.0.1',
      servername: 'localhost',
      ca: readFileSync(pki.caCert),
      minVersion: version,
      maxVersion: version,
      ...(c.cert ? { cert: readFileSync(c.cert), key: readFileSync(c.key as string) } : {}),
    };
  }

  function nodeClient(c: Client, version: Version): Promise<Outcome> {
    return new Promise((resolve) => {
      let handshakeDone = false;
      const s = tls.connect(connectOptions(c, version));
      s.once('secureConnect', () => {
        handshakeDone = true;
        s.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
      });
      s.once('data', () => resolve({ handshakeDone, code: 'answered' }));
      s.once('error', (e: NodeJS.ErrnoException) => resolve({ handshakeDone, code: e.code ?? e.message }));
      s.once('close', () => resolve({ handshakeDone, code: 'closed without alert' }));
    });
  }

  function curl(c: Client, version: Version): Promise<{ exit: number; stderr: string }> {
    const v = version === 'TLSv1.2' ? '1.2' : '1.3';
    const args = ['-sS', '--max-time', '10', `--tlsv${v}`, '--tls-max', v, '--cacert', pki.caCert, ...(c.cert ? ['--cert', c.cert, '--key', c.key as string] : []), `https://localhost:${app.port}/healthz`];
    return new Promise((resolve) => {
      execFile('curl', args, (err, _stdout, stderr) => resolve({ exit: err ? Number((err as { code?: number }).code) : 0, stderr }));
    });
  }

  // [client, alert code Node reports, text curl prints]
  const refusals: [string, string, RegExp][] = [
    ['unknownCa', 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', /alert unknown ca/],
    ['selfSigned', 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', /alert unknown ca/],
    ['expired', 'ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED', /alert certificate expired|verification failed/],
    ['subject', 'ERR_SSL_TLSV1_ALERT_ACCESS_DENIED', /alert access denied/],
    ['purpose', 'ERR_SSL_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE', /alert unsupported certificate/],
  ];

  it.each(refusals)('TLS 1.2, %s: the handshake fails with an alert (Node: %s; curl fails in SSL_connect)', async (name, code, text) => {
    expect(await nodeClient(clients[name] as Client, 'TLSv1.2')).toEqual({ handshakeDone: false, code });
    const r = await curl(clients[name] as Client, 'TLSv1.2');
    // curl files a received certificate_expired alert under "peer verification failed" (60); still an SSL_connect failure.
    expect(r.exit).toBe(name === 'expired' ? 60 : 35);
    if (name !== 'expired') expect(r.stderr).toMatch(text);
  });

  it.each(refusals)('TLS 1.3, %s: the first read fails with the alert (Node: %s; curl exit 56)', async (name, code, text) => {
    // TLS 1.3 clients finish before the server has seen their certificate: the alert is the first record they read.
    expect(await nodeClient(clients[name] as Client, 'TLSv1.3')).toEqual({ handshakeDone: true, code });
    const r = await curl(clients[name] as Client, 'TLSv1.3');
    expect(r.exit).toBe(56);
    expect(r.stderr).toMatch(text);
    expect(r.stderr).not.toMatch(/Empty reply|reset by peer/);
  });

  it('no certificate: handshake_failure under TLS 1.2, certificate_required under TLS 1.3', async () => {
    expect(await nodeClient({}, 'TLSv1.2')).toEqual({ handshakeDone: false, code: 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE' });
    expect(await nodeClient({}, 'TLSv1.3')).toEqual({ handshakeDone: true, code: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED' });
    expect((await curl({}, 'TLSv1.2')).exit).toBe(35);
    const r = await curl({}, 'TLSv1.3');
    expect(r.exit).toBe(56);
    expect(r.stderr).toMatch(/alert certificate required/);
  });

  it.each(['TLSv1.2', 'TLSv1.3'] as Version[])('%s: KMS\'s certificate is served, on fresh and on resumed sessions', async (version) => {
    expect(await nodeClient(clients.good as Client, version)).toEqual({ handshakeDone: true, code: 'answered' });
    const r = await curl(clients.good as Client, version);
    expect(r.exit).toBe(0);
    const agent = new https.Agent({ maxCachedSessions: 10, keepAlive: false });
    const status = (): Promise<{ status: number; reused: boolean }> =>
      new Promise((resolve, reject) => {
        const req = https.request(
          {
            host: '127.0.0.1',
            port: app.port,
            path: '/healthz',
            servername: 'localhost',
            agent,
            ca: readFileSync(pki.caCert),
            cert: readFileSync(clients.good?.cert as string),
            key: readFileSync(clients.good?.key as string),
            minVersion: version,
            maxVersion: version,
          },
          (res) => {
            res.resume();
            resolve({ status: res.statusCode ?? 0, reused: (res.socket as tls.TLSSocket).isSessionReused() });
          },
        );
        req.on('error', reject);
        req.end();
      });
    expect((await status()).status).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 100));
    expect(await status()).toEqual({ status: expect.any(Number), reused: true });
  });

  it('a refused client cannot resume a session: it never received a ticket', async () => {
    for (const version of ['TLSv1.2', 'TLSv1.3'] as Version[]) {
      let session: Buffer | undefined;
      await new Promise<void>((resolve) => {
        const s = tls.connect(connectOptions(clients.subject as Client, version));
        s.on('session', (b) => (session = b));
        s.on('error', () => undefined);
        s.once('close', () => resolve());
      });
      expect(session).toBeUndefined();
    }
  });
});
