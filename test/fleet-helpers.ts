import { randomBytes } from 'node:crypto';
import { b64, Credential, keyMetadata, send } from './support/proxy';
import { until as poll } from './support/promises';

/** The shared poller with the fleet's longer default (an HSM comes back within the breaker's probe period). */
export const until = <T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 20_000): Promise<T> => poll(fn, ok, ms, 100);
type Sealed = { ciphertext: string; ciphertextMetadata: string; initializationVector: string; authenticationTag: string };

/** One encrypt and the decrypt of its answer through the proxy; undefined when the plaintext came back. */
export async function roundTrip(port: number, prefix: string, keyId: string, cred: Credential): Promise<string | undefined> {
  const plaintext = randomBytes(32);
  const e = await send(port, `${prefix}/keys/${keyId}/encrypt`, { requestMetadata: keyMetadata('Encrypt'), plaintext: b64(plaintext), encryptionAlgorithm: 'AES_GCM' }, cred);
  if (e.status !== 200) return `encrypt ${String(e.body.errorName)}: ${String(e.body.errorMessage)}`;
  const { ciphertext, ciphertextMetadata, initializationVector, authenticationTag } = e.body as unknown as Sealed;
  const d = await send(
    port,
    `${prefix}/keys/${keyId}/decrypt`,
    { requestMetadata: keyMetadata('Decrypt'), encryptionAlgorithm: 'AES_GCM', ciphertext, ciphertextMetadata, initializationVector, authenticationTag },
    cred,
  );
  if (d.status !== 200) return `decrypt ${String(d.body.errorName)}: ${String(d.body.errorMessage)}`;
  return d.body.plaintext === b64(plaintext) ? undefined : 'decrypt returned other data';
}
