/**
 * The fatal TLS alert a refused client certificate gets: handshake_failure, whatever the reason (the
 * reason goes to the log and a metric, not to the client). AWS's XKS test client expects exactly that
 * alert (it greps curl's `TLS alert, handshake failure`), and it tells a probing client nothing.
 *
 * Node lets OpenSSL check the client's chain during the handshake but never lets that check fail it
 * (Node's verify callback accepts everything, and OpenSSL's is not exposed); the verdict is applied in
 * JavaScript once the handshake is done, where Node's own refusal is a bare close. So the alert is
 * written here, on the TCP socket under the TLS layer, when the server's handshake completes and
 * before the server's last flight leaves the process:
 * - TLS 1.2 needs no secret: the server's ChangeCipherSpec and Finished are still unsent, so the
 *   client is still in the handshake and reads a plaintext record: 7 bytes. (A resumed 1.2 session
 *   has already sent its Finished: that refusal gets a bare close.)
 * - TLS 1.3: the server sent its Finished before the client's certificate arrived and then switched
 *   its writes to the application traffic keys; the client, done with its side, reads with those. An
 *   alert under the handshake keys, or in plaintext, would be a decryption or record-type error to
 *   it. So the alert is protected with SERVER_TRAFFIC_SECRET_0, which Node gives out only through the
 *   server's 'keylog' event. The session tickets OpenSSL queued behind it are dropped with the
 *   connection, so the alert is record 0. Only that secret is kept, as a Buffer (never a string),
 *   until the verdict or the close, then zeroed; every keylog line is zeroed once read.
 * See docs/threat-model.md for what clients report.
 */
import { CipherGCM, createCipheriv, createHmac } from 'node:crypto';
import net from 'node:net';
import type tls from 'node:tls';

const HANDSHAKE_FAILURE = 40;
const FATAL = 2;
const ALERT = 0x15;

/** TLS 1.3 suites: AEAD cipher, HKDF hash, key length. */
const SUITES: Record<string, { cipher: string; hash: string; keyLength: number }> = {
  TLS_AES_128_GCM_SHA256: { cipher: 'aes-128-gcm', hash: 'sha256', keyLength: 16 },
  TLS_AES_256_GCM_SHA384: { cipher: 'aes-256-gcm', hash: 'sha384', keyLength: 32 },
  TLS_CHACHA20_POLY1305_SHA256: { cipher: 'chacha20-poly1305', hash: 'sha256', keyLength: 32 },
};

/** RFC 8446 7.1 HKDF-Expand-Label with an empty context; every length used here fits one HMAC block. */
function expandLabel(hash: string, secret: Buffer, label: string, length: number): Buffer {
  const name = Buffer.from(`tls13 ${label}`, 'latin1');
  const info = Buffer.concat([Buffer.from([length >> 8, length & 0xff, name.length]), name, Buffer.from([0, 1])]);
  return createHmac(hash, secret).update(info).digest().subarray(0, length);
}

/** The handshake_failure alert as TLS 1.3 record 0 under the server's application traffic secret. */
function protectedAlert(suiteName: string, secret: Buffer): Buffer | undefined {
  const suite = SUITES[suiteName];
  if (!suite) return undefined;
  const key = expandLabel(suite.hash, secret, 'key', suite.keyLength);
  const iv = expandLabel(suite.hash, secret, 'iv', 12);
  try {
    // Record 0: the nonce is the IV itself. Inner plaintext: level, description, content type alert.
    const header = Buffer.from([0x17, 0x03, 0x03, 0x00, 3 + 16]);
    // All three AEADs default to a 16-byte tag and share the GCM cipher interface.
    const c = createCipheriv(suite.cipher, key, iv) as CipherGCM;
    c.setAAD(header);
    return Buffer.concat([header, c.update(Buffer.from([FATAL, HANDSHAKE_FAILURE, ALERT])), c.final(), c.getAuthTag()]);
  } finally {
    key.fill(0);
    iv.fill(0);
  }
}

const PLAIN_ALERT = Buffer.from([ALERT, 0x03, 0x03, 0x00, 0x02, FATAL, HANDSHAKE_FAILURE]);

const LABEL = Buffer.from('SERVER_TRAFFIC_SECRET_0 ', 'latin1');

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

/**
 * The secret of a `SERVER_TRAFFIC_SECRET_0 <client random> <secret>` keylog line, decoded byte by byte
 * (Buffer.from(hex) would need the hex as a string first); undefined for any other line.
 */
export function serverTrafficSecret(line: Buffer): Buffer | undefined {
  if (line.length <= LABEL.length || !LABEL.equals(line.subarray(0, LABEL.length))) return undefined;
  let end = line.length;
  while (end > 0 && (line[end - 1] === 0x0a || line[end - 1] === 0x0d)) end--;
  const start = line.lastIndexOf(0x20, end - 1) + 1;
  if (start <= LABEL.length || (end - start) % 2 !== 0 || end === start) return undefined;
  const secret = Buffer.alloc((end - start) / 2);
  for (let i = 0; i < secret.length; i++) {
    const hi = hexDigit(line[start + 2 * i] as number);
    const lo = hexDigit(line[start + 2 * i + 1] as number);
    if (hi < 0 || lo < 0) {
      secret.fill(0);
      return undefined;
    }
    secret[i] = (hi << 4) | lo;
  }
  return secret;
}

/** Sends refusal alerts on a TLS server's connections; holds each TLS 1.3 connection's server secret only until its verdict. */
export class TlsAlerts {
  private readonly secrets = new WeakMap<tls.TLSSocket, Buffer>();

  constructor(server: tls.Server) {
    // The only 'keylog' listener (it exists for this): the line is zeroed once read, whatever it holds.
    server.on('keylog', (line: Buffer, socket: tls.TLSSocket) => {
      try {
        const secret = serverTrafficSecret(line);
        if (!secret) return;
        this.forget(socket);
        this.secrets.set(socket, secret);
        // A client that never finishes its handshake gets no verdict.
        socket.once('close', () => this.forget(socket));
      } finally {
        line.fill(0);
      }
    });
  }

  /** The connection is accepted: its secret is no longer needed. */
  accept(socket: tls.TLSSocket): void {
    this.forget(socket);
  }

  /**
   * Writes handshake_failure to the TCP socket under the TLS layer and destroys the connection. Must
   * run synchronously in 'secureConnection'; if the alert cannot be made the connection is still
   * closed. Never throws.
   */
  refuse(socket: tls.TLSSocket): void {
    try {
      const record = this.record(socket);
      // `_parent` is the net.Socket Node wrapped; its writes bypass TLS and reach the kernel at once.
      const raw = (socket as unknown as { _parent?: unknown })._parent;
      if (record && raw instanceof net.Socket && !raw.destroyed) raw.write(record);
    } catch {
      // No alert then; the refusal itself must not fail.
    } finally {
      this.forget(socket);
      socket.destroy();
    }
  }

  private forget(socket: tls.TLSSocket): void {
    this.secrets.get(socket)?.fill(0);
    this.secrets.delete(socket);
  }

  private record(socket: tls.TLSSocket): Buffer | undefined {
    const protocol = socket.getProtocol();
    if (protocol === 'TLSv1.2') return socket.isSessionReused() ? undefined : PLAIN_ALERT;
    const secret = this.secrets.get(socket);
    if (protocol !== 'TLSv1.3' || !secret) return undefined;
    return protectedAlert(socket.getCipher().standardName, secret);
  }
}
