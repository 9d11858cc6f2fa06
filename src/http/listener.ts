import { readFileSync, watchFile, unwatchFile } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { TLSSocket } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import type { TlsConfig } from '../config/schema';
import type { ProxyEvents } from '../events';
import type { Logger } from '../log';

/** TLS 1.2 suites: ECDHE with AEAD only (the spec requires ECDHE-*-AES256-GCM-SHA384; TLS 1.3 suites are all AEAD). */
const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
].join(':');

export interface ListenerOptions {
  tls?: TlsConfig;
  keepAliveTimeoutMs: number;
  logger: Logger;
  /** Publishes 'tls.certificate' (days to expiry) after every (re)load of the serving certificate. */
  events?: ProxyEvents;
}

function tlsMaterial(tls: TlsConfig): { cert: Buffer; key: Buffer; ca?: Buffer } {
  return {
    cert: readFileSync(tls.certFile),
    key: readFileSync(tls.keyFile),
    ca: tls.clientCaFile ? readFileSync(tls.clientCaFile) : undefined,
  };
}

function daysToExpiry(cert: Buffer): number {
  return (Date.parse(new X509Certificate(cert).validTo) - Date.now()) / 86_400_000;
}

export interface Listener {
  server: http.Server;
  /** Stops watching certificate files. */
  dispose(): void;
}

export function createListener(handler: http.RequestListener, opts: ListenerOptions): Listener {
  const tls = opts.tls;
  let server: http.Server;
  let dispose = (): void => undefined;
  if (!tls) {
    server = http.createServer(handler);
  } else {
    const mtls = tls.clientCaFile !== undefined;
    const material = tlsMaterial(tls);
    const secure = https.createServer(
      {
        ...material,
        minVersion: tls.minVersion,
        ciphers: TLS12_CIPHERS,
        honorCipherOrder: true,
        requestCert: mtls,
        rejectUnauthorized: mtls,
      },
      handler,
    );
    opts.events?.publish('tls.certificate', { daysToExpiry: daysToExpiry(material.cert) });
    const allowed = new Set(tls.allowedClientSubjects);
    if (mtls && allowed.size > 0) {
      // The CA check happens in the handshake (rejectUnauthorized); the subject check right after it, before any request is read.
      secure.prependListener('secureConnection', (socket: TLSSocket) => {
        const cn = socket.getPeerCertificate()?.subject?.CN;
        const names = Array.isArray(cn) ? cn : cn ? [cn] : [];
        if (!names.some((n) => allowed.has(n))) {
          opts.logger.warn({ subject: names.join(','), remote: socket.remoteAddress }, 'mTLS client subject not allowed; connection closed');
          socket.destroy();
        }
      });
    }
    // Certificates rotate by replacing files; new handshakes use the new context, open connections carry on.
    const reload = (): void => {
      try {
        const next = tlsMaterial(tls);
        secure.setSecureContext({ ...next, minVersion: tls.minVersion, ciphers: TLS12_CIPHERS, honorCipherOrder: true });
        opts.events?.publish('tls.certificate', { daysToExpiry: daysToExpiry(next.cert) });
        opts.logger.info('TLS certificate reloaded');
      } catch (e) {
        opts.logger.error({ err: (e as Error).message }, 'TLS certificate reload failed; keeping the previous one');
      }
    };
    const files = [tls.certFile, tls.keyFile, ...(tls.clientCaFile ? [tls.clientCaFile] : [])];
    for (const f of files) watchFile(f, { interval: 2000, persistent: false }, reload);
    dispose = () => files.forEach((f) => unwatchFile(f, reload));
    server = secure;
  }
  server.keepAliveTimeout = opts.keepAliveTimeoutMs;
  server.headersTimeout = Math.min(opts.keepAliveTimeoutMs + 1000, 120_000);
  server.requestTimeout = 30_000;
  return { server, dispose };
}
