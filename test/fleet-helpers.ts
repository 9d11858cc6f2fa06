import { randomBytes } from 'node:crypto';
import { b64, Credential, keyMetadata, send } from './support/proxy';

/** Polls fn until ok says so or ms pass; returns the last value (the caller's expect says what was wanted). */
export async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  let v = await fn();
  while (!ok(v) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 100));
    v = await fn();
  }
  return v;
}

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
