/**
 * Fatal TLS alerts for client certificates the proxy refuses.
 *
 * Node lets OpenSSL check the client's chain during the handshake but never lets that check fail
 * it (Node's verify callback accepts everything; the verdict is applied in JavaScript once the
 * handshake is done, as a bare close). A refused client then sees an empty reply or a reset, not a
 * refused certificate. This module turns the verdict into a real alert, written when the server's
 * handshake completes, before the server's last flight leaves the process:
 * - TLS 1.2: the server's ChangeCipherSpec and Finished are still unsent, so the client is still in
 *   the handshake and expects a plaintext record: the alert is 7 bytes.
 * - TLS 1.3: the client has already finished; the alert must be protected with the server's
 *   application traffic secret (learned from the 'keylog' event) as its first record. The session
 *   tickets OpenSSL queued before it are dropped with the connection, so the sequence number is 0.
 * See docs/threat-model.md for what clients report.
 */
import { CipherGCM, createCipheriv, createHmac } from 'node:crypto';
import net from 'node:net';
import type tls from 'node:tls';

/** RFC 8446 section 6 alert descriptions the proxy sends. */
export const Alert = {
  handshakeFailure: 40,
  badCertificate: 42,
  unsupportedCertificate: 43,
  certificateRevoked: 44,
  certificateExpired: 45,
  unknownCa: 48,
  accessDenied: 49,
  certificateRequired: 116,
} as const;

const UNKNOWN_ISSUER = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'INVALID_CA',
  'CERT_CHAIN_TOO_LONG',
  'PATH_LENGTH_EXCEEDED',
]);

/** The alert for a failed chain check (`authorizationError`), with the meanings RFC 5246 7.2.2 gives them. */
export function alertForVerifyError(code: string, protocol: string | null, hasCertificate: boolean): number {
  // Without a certificate OpenSSL itself would send these two (its FAIL_IF_NO_PEER_CERT).
  if (!hasCertificate) return protocol === 'TLSv1.3' ? Alert.certificateRequired : Alert.handshakeFailure;
  if (UNKNOWN_ISSUER.has(code)) return Alert.unknownCa;
  if (code === 'CERT_HAS_EXPIRED') return Alert.certificateExpired;
  if (code === 'CERT_REVOKED') return Alert.certificateRevoked;
  if (code === 'INVALID_PURPOSE') return Alert.unsupportedCertificate;
  return Alert.badCertificate;
}

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

function protectedAlert(suiteName: string, secret: Buffer, description: number): Buffer | undefined {
  const suite = SUITES[suiteName];
  if (!suite) return undefined;
  const key = expandLabel(suite.hash, secret, 'key', suite.keyLength);
  const iv = expandLabel(suite.hash, secret, 'iv', 12);
  // Record 0: the nonce is the IV itself. Inner plaintext: level fatal, description, content type alert.
  const header = Buffer.from([0x17, 0x03, 0x03, 0x00, 3 + 16]);
  // All three AEADs default to a 16-byte tag and share the GCM cipher interface.
  const c = createCipheriv(suite.cipher, key, iv) as CipherGCM;
  c.setAAD(header);
  const body = Buffer.concat([c.update(Buffer.from([2, description, 0x15])), c.final(), c.getAuthTag()]);
  key.fill(0);
  return Buffer.concat([header, body]);
}

const TRAFFIC_SECRET = 'SERVER_TRAFFIC_SECRET_0 ';

/** Sends refusal alerts on a TLS server's connections; keeps each TLS 1.3 server secret only until the verdict. */
export class TlsAlerts {
  private readonly secrets = new WeakMap<tls.TLSSocket, Buffer>();

  constructor(server: tls.Server) {
    server.on('keylog', (line: Buffer, socket: tls.TLSSocket) => {
      if (line.subarray(0, TRAFFIC_SECRET.length).toString('latin1') !== TRAFFIC_SECRET) return;
      const hex = line.toString('latin1').trim().split(' ')[2];
      if (hex) this.secrets.set(socket, Buffer.from(hex, 'hex'));
    });
  }

  /** The connection is accepted: its secret is no longer needed. */
  accept(socket: tls.TLSSocket): void {
    this.secrets.get(socket)?.fill(0);
    this.secrets.delete(socket);
  }

  /**
   * Writes the alert to the TCP socket under the TLS layer and destroys the connection. Must run
   * synchronously in 'secureConnection'; if the alert cannot be made the connection is still closed.
   * Never throws.
   */
  refuse(socket: tls.TLSSocket, description: number): void {
    try {
      const record = this.record(socket, description);
      // `_parent` is the net.Socket Node wrapped; its writes bypass TLS and reach the kernel at once.
      const raw = (socket as unknown as { _parent?: unknown })._parent;
      if (record && raw instanceof net.Socket && !raw.destroyed) raw.write(record);
    } catch {
      // No alert then; the refusal itself must not fail.
    } finally {
      this.accept(socket);
      socket.destroy();
    }
  }

  private record(socket: tls.TLSSocket, description: number): Buffer | undefined {
    const protocol = socket.getProtocol();
    if (protocol === 'TLSv1.2') return Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 2, description]);
    const secret = this.secrets.get(socket);
    if (protocol !== 'TLSv1.3' || !secret) return undefined;
    return protectedAlert(socket.getCipher().standardName, secret, description);
  }
}
