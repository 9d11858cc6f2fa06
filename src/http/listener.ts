import { readFileSync, watchFile, unwatchFile } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { TLSSocket } from 'node:tls';
import { constants, X509Certificate } from 'node:crypto';
import type { TlsConfig } from '../config/schema';
import type { ProxyEvents } from '../events';
import type { Logger } from '../log';
import { judgeClient } from './client-verdict';
import { TlsAlerts } from './tls-alert';

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
  /** Connection bounds (server.maxConnections, headersTimeoutMs, requestTimeoutMs); the schema's defaults when absent. */
  maxConnections?: number;
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
  logger: Logger;
  /**
   * Publishes 'tls.certificate' (days to expiry) after every (re)load of the serving certificate,
   * 'tls.clientRefused' (the reason) for each client certificate mTLS refuses, and
   * 'connection.dropped' for each connection the maxConnections cap refuses (a counter: a log line each would flood).
   */
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

/** Must match the defaults in the config schema: callers that predate the options get the same bounds. */
const DEFAULT_MAX_CONNECTIONS = 1024;
const DEFAULT_HEADERS_TIMEOUT_MS = 5000;
const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;

/**
 * Node checks headersTimeout and requestTimeout only every connectionsCheckingInterval (30 s by
 * default), which stretches a 5 s timeout to 35 s; a 1 s sweep keeps the bound what it says.
 */
const CHECK_INTERVAL_MS = 1000;

export function createListener(handler: http.RequestListener, opts: ListenerOptions): Listener {
  const tls = opts.tls;
  const headersTimeout = opts.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS;
  const bounds = {
    keepAliveTimeout: opts.keepAliveTimeoutMs,
    headersTimeout,
    requestTimeout: Math.max(opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS, headersTimeout),
    connectionsCheckingInterval: CHECK_INTERVAL_MS,
  };
  let server: http.Server;
  let dispose = (): void => undefined;
  if (!tls) {
    server = http.createServer(bounds, handler);
  } else {
    const mtls = tls.clientCaFile !== undefined;
    const material = tlsMaterial(tls);
    const secure = https.createServer(
      {
        ...material,
        ...bounds,
        // A client that never finishes its handshake is as slow as one that never finishes its headers.
        handshakeTimeout: headersTimeout,
        minVersion: tls.minVersion,
        ciphers: TLS12_CIPHERS,
        honorCipherOrder: true,
        requestCert: mtls,
        // The client certificate is judged once, when the handshake completes (below): a renegotiation
        // could otherwise present another certificate afterwards.
        secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
        // The chain verdict is applied below, where it can be sent as a TLS alert; Node's own
        // rejection would only close the connection after the handshake.
        rejectUnauthorized: false,
      },
      handler,
    );
    opts.events?.publish('tls.certificate', { daysToExpiry: daysToExpiry(material.cert) });
    if (mtls) {
      const alerts = new TlsAlerts(secure);
      const allowed = tls.allowedClientSubjects;
      const verdict = (socket: TLSSocket): void => {
        const v = judgeClient({ authorized: socket.authorized, authorizationError: socket.authorizationError, certificate: socket.getPeerX509Certificate() }, allowed);
        if (v.ok) {
          alerts.accept(socket);
          return;
        }
        // Read before the socket is gone.
        const fields = { reason: v.reason, detail: v.detail.slice(0, 512), protocol: socket.getProtocol(), remote: socket.remoteAddress };
        alerts.refuse(socket);
        opts.logger.warn(fields, 'mTLS client refused; handshake_failure alert sent');
        opts.events?.publish('tls.clientRefused', { reason: v.reason });
      };
      // Runs synchronously as the handshake completes, before the HTTP layer sees the connection. It
      // runs inside OpenSSL's callback: an exception here would take the process down, so it fails closed instead.
      secure.prependListener('secureConnection', (socket: TLSSocket) => {
        try {
          verdict(socket);
        } catch (e) {
          socket.destroy();
          opts.logger.error({ err: (e as Error).message }, 'mTLS verdict failed; connection closed');
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
  // Beyond this, net.Server closes a new connection as soon as it is accepted; open ones carry on.
  server.maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  const events = opts.events;
  if (events) server.on('drop', () => events.publish('connection.dropped', {}));
  return { server, dispose };
}
