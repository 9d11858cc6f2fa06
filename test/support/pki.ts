import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ClientCert {
  cert: string;
  key: string;
}

interface ClientOptions {
  signedBy?: 'ca' | 'other';
  /** subjectAltName DNS names; none by default (the CN is then the only name). */
  dnsNames?: string[];
  /** Validity from now; -1 ended yesterday (notAfter before notBefore is fine for OpenSSL). */
  days?: number;
  /** extendedKeyUsage: serverAuth is the wrong purpose for a client. */
  purpose?: 'clientAuth' | 'serverAuth';
}

/** A throwaway PKI made with the openssl CLI: a CA, a server certificate and client certificates. */
export interface Pki {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  otherCaCert: string;
  /** A client certificate with subject CN=cn (an empty cn: an empty subject). */
  client(cn: string, opts?: ClientOptions | 'ca' | 'other'): ClientCert;
  /** A self-signed client certificate (clientAuth), valid now. */
  selfSigned(cn: string): ClientCert;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: 'pipe' });
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
const subject = (cn: string): string => (cn ? `/CN=${cn}` : '/');

function makeCa(dir: string, name: string): void {
  openssl(['req', '-x509', ...EC, '-days', '2', '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.pem`], dir);
}

function issue(dir: string, ca: string, name: string, cn: string, ext: string, days = 2): void {
  openssl(['req', ...EC, '-subj', subject(cn), '-keyout', `${name}.key`, '-out', `${name}.csr`], dir);
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-days', String(days), '-extfile', `${name}.ext`, '-out', `${name}.pem`], dir);
}

export function makePki(): Pki {
  const dir = mkdtempSync(join(tmpdir(), 'xks-pki-'));
  makeCa(dir, 'ca');
  makeCa(dir, 'other');
  issue(dir, 'ca', 'server', 'localhost', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  let n = 0;
  const files = (name: string): ClientCert => ({ cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) });
  return {
    dir,
    caCert: join(dir, 'ca.pem'),
    serverCert: join(dir, 'server.pem'),
    serverKey: join(dir, 'server.key'),
    otherCaCert: join(dir, 'other.pem'),
    client(cn, opts = {}) {
      const o: ClientOptions = typeof opts === 'string' ? { signedBy: opts } : opts;
      const name = `client${n++}`;
      const san = o.dnsNames?.length ? `subjectAltName=${o.dnsNames.map((d) => `DNS:${d}`).join(',')}\n` : '';
      issue(dir, o.signedBy ?? 'ca', name, cn, `extendedKeyUsage=${o.purpose ?? 'clientAuth'}\n${san}`, o.days);
      return files(name);
    },
    selfSigned(cn) {
      const name = `self${n++}`;
      openssl(['req', '-x509', ...EC, '-days', '2', '-subj', subject(cn), '-addext', 'extendedKeyUsage=clientAuth', '-keyout', `${name}.key`, '-out', `${name}.pem`], dir);
      return files(name);
    },
  };
}
