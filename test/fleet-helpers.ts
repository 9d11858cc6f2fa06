import { randomBytes } from 'node:crypto';
import { b64, Credential, keyMetadata, send } from './support/proxy';

/** How long the fleet suites wait for an HSM to be seen lost or back (it returns within the breaker's probe period). */
export const FLEET_WAIT_MS = 20_000;

/**
 * Round trips from `clients` concurrent clients until stop(), as real traffic: every failure is kept
 * (a request that throws is one), and more(n) resolves once n more have been done.
 */
export class Load {
  count = 0;
  readonly failures: string[] = [];
  private stopped = false;
  private waiters: { at: number; resolve: () => void }[] = [];
  private readonly done: Promise<unknown>;

  constructor(clients: number, one: () => Promise<string | undefined>) {
    this.done = Promise.all(Array.from({ length: clients }, () => this.client(one)));
  }

  private async client(one: () => Promise<string | undefined>): Promise<void> {
    while (!this.stopped) {
      const f = await one().catch((e: unknown) => `threw: ${String(e)}`);
      this.count++;
      if (f) this.failures.push(f);
      for (const w of this.waiters) if (this.count >= w.at) w.resolve();
      this.waiters = this.waiters.filter((w) => this.count < w.at);
    }
  }

  more(n: number): Promise<void> {
    return new Promise((resolve) => this.waiters.push({ at: this.count + n, resolve }));
  }

  async stop(): Promise<{ count: number; failures: string[] }> {
    this.stopped = true;
    await this.done;
    for (const w of this.waiters) w.resolve();
    return { count: this.count, failures: this.failures };
  }
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
