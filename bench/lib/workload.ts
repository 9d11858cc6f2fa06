/**
 * The XKS requests the benchmark sends: a pool of distinct, SigV4-signed requests in the proportions
 * of the chosen mix, shuffled, handed out round-robin to every connection.
 *
 * Signing: the pool is signed once before the runs; an entry whose signature is older than its
 * refresh age is re-signed lazily, the next time it is handed out. Refresh ages start spread over
 * 30-60 s so that re-signing trickles (pool/60 signatures per second, about 25 us each) instead of
 * stalling the load generator once a minute. The proxy accepts signatures up to 5 minutes old, so
 * every request in flight carries one at most 60 s old.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import aws4 from 'aws4';

export type Op = 'encrypt' | 'decrypt' | 'metadata' | 'health';
export type Mix = 'realistic' | Op;

/** Share of each operation in a mix. realistic: what KMS sends for envelope encryption (GenerateDataKey / Decrypt). */
export const MIXES: Record<Mix, Partial<Record<Op, number>>> = {
  realistic: { decrypt: 0.45, encrypt: 0.45, metadata: 0.07, health: 0.03 },
  encrypt: { encrypt: 1 },
  decrypt: { decrypt: 1 },
  metadata: { metadata: 1 },
  health: { health: 1 },
};

export interface Credential {
  accessKeyId: string;
  secretAccessKey: string;
}

/** What autocannon's setupRequest returns. */
export interface WireRequest {
  method: 'POST';
  path: string;
  headers: Record<string, string>;
  body: string;
}

interface Entry {
  op: Op;
  path: string;
  body: string;
  headers: Record<string, string>;
  refreshAt: number;
}

/** A real ciphertext made at setup, so decrypt requests succeed. */
export interface Sealed {
  aad: string;
  ciphertext: string;
  ciphertextMetadata: string;
  initializationVector: string;
  authenticationTag: string;
}

const PRINCIPAL = 'arn:aws:iam::123456789012:user/Alice';
const KEY_ARN = 'arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';
/** Both demo keys encrypt and answer metadata; only demo-key-1 may decrypt. */
const ENCRYPT_KEYS = ['demo-key-1', 'demo-key-2'];
const DECRYPT_KEY = 'demo-key-1';
const MAX_SIGNATURE_AGE_MS = 60_000;

export function signRequest(host: string, path: string, body: string, cred: Credential): Record<string, string> {
  const req = { host, path, method: 'POST', service: 'kms-xks-proxy', region: 'us-east-1', body, headers: { 'content-type': 'application/json' } };
  aws4.sign(req, cred);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) headers[k] = String(v);
  return headers;
}

function metadata(kmsOperation: string): Record<string, string> {
  return { awsPrincipalArn: PRINCIPAL, kmsKeyArn: KEY_ARN, kmsOperation, kmsRequestId: randomUUID() };
}

export function encryptBody(): string {
  return JSON.stringify({
    requestMetadata: metadata('GenerateDataKey'),
    plaintext: randomBytes(32).toString('base64'),
    encryptionAlgorithm: 'AES_GCM',
    additionalAuthenticatedData: randomBytes(64).toString('base64'),
  });
}

function decryptBody(s: Sealed): string {
  return JSON.stringify({
    requestMetadata: metadata('Decrypt'),
    encryptionAlgorithm: 'AES_GCM',
    ciphertext: s.ciphertext,
    ciphertextMetadata: s.ciphertextMetadata,
    initializationVector: s.initializationVector,
    authenticationTag: s.authenticationTag,
    additionalAuthenticatedData: s.aad,
  });
}

function bodyFor(op: Op, i: number, sealed: readonly Sealed[], base: string): { path: string; body: string } {
  switch (op) {
    case 'encrypt':
      return { path: `${base}/keys/${ENCRYPT_KEYS[i % ENCRYPT_KEYS.length]}/encrypt`, body: encryptBody() };
    case 'decrypt':
      return { path: `${base}/keys/${DECRYPT_KEY}/decrypt`, body: decryptBody(sealed[i % sealed.length] as Sealed) };
    case 'metadata': {
      const { awsPrincipalArn, kmsRequestId } = metadata('DescribeKey');
      return { path: `${base}/keys/${ENCRYPT_KEYS[i % ENCRYPT_KEYS.length]}/metadata`, body: JSON.stringify({ requestMetadata: { awsPrincipalArn, kmsOperation: 'DescribeKey', kmsRequestId } }) };
    }
    case 'health':
      return { path: `${base}/health`, body: JSON.stringify({ requestMetadata: { kmsRequestId: randomUUID(), kmsOperation: 'KmsHealthCheck' } }) };
  }
}

export class SignedPool {
  private readonly entries: Entry[] = [];
  private cursor = 0;
  /** Signatures made since construction (initial ones included). */
  signatures = 0;
  readonly counts: Partial<Record<Op, number>> = {};

  constructor(
    private readonly host: string,
    private readonly cred: Credential,
    mix: Mix,
    size: number,
    basePath: string,
    sealed: readonly Sealed[],
  ) {
    const shares = MIXES[mix];
    for (const [op, share] of Object.entries(shares) as [Op, number][]) {
      const n = Math.max(1, Math.round(size * share));
      this.counts[op] = n;
      for (let i = 0; i < n; i++) this.entries.push({ op, ...bodyFor(op, i, sealed, basePath), headers: {}, refreshAt: 0 });
    }
    // Fisher-Yates: the proportions hold over any window of the pool, not only over a full cycle.
    for (let i = this.entries.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [this.entries[i], this.entries[j]] = [this.entries[j] as Entry, this.entries[i] as Entry];
    }
    this.signAll();
  }

  get size(): number {
    return this.entries.length;
  }

  /** Fresh signatures everywhere, with refresh ages spread over 30-60 s. */
  signAll(): void {
    const now = Date.now();
    this.entries.forEach((e, i) => {
      this.sign(e, now);
      e.refreshAt = now + MAX_SIGNATURE_AGE_MS / 2 + (MAX_SIGNATURE_AGE_MS / 2) * (i / this.entries.length);
    });
  }

  private sign(e: Entry, now: number): void {
    e.headers = signRequest(this.host, e.path, e.body, this.cred);
    e.refreshAt = now + MAX_SIGNATURE_AGE_MS;
    this.signatures++;
  }

  /** The next request, re-signed first if its signature is due. */
  next(): WireRequest {
    const e = this.entries[this.cursor] as Entry;
    this.cursor = this.cursor + 1 === this.entries.length ? 0 : this.cursor + 1;
    const now = Date.now();
    if (now >= e.refreshAt) this.sign(e, now);
    return { method: 'POST', path: e.path, headers: e.headers, body: e.body };
  }

  /** One entry of each operation in the pool (for the pre-run check). */
  samples(): { op: Op; path: string; body: string }[] {
    const seen = new Set<Op>();
    return this.entries.filter((e) => !seen.has(e.op) && seen.add(e.op)).map(({ op, path, body }) => ({ op, path, body }));
  }
}

/** One signed POST outside autocannon (setup and checks). */
export function post(port: number, path: string, body: string, cred: Credential): Promise<{ status: number; json: Record<string, unknown> }> {
  const headers = signRequest(`127.0.0.1:${port}`, path, body, cred);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'POST', headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: Record<string, unknown> = {};
        try {
          json = JSON.parse(text) as Record<string, unknown>;
        } catch {
          json = { raw: text };
        }
        resolve({ status: res.statusCode ?? 0, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Encrypts `count` data keys through the proxy; decrypt requests replay them. */
export async function makeCiphertexts(port: number, basePath: string, cred: Credential, count: number): Promise<Sealed[]> {
  const out: Sealed[] = [];
  const one = async (): Promise<void> => {
    const body = encryptBody();
    const aad = (JSON.parse(body) as { additionalAuthenticatedData: string }).additionalAuthenticatedData;
    const r = await post(port, `${basePath}/keys/${DECRYPT_KEY}/encrypt`, body, cred);
    if (r.status !== 200) throw new Error(`setup encrypt failed: HTTP ${r.status} ${JSON.stringify(r.json)}`);
    const j = r.json as Record<string, string>;
    out.push({
      aad,
      ciphertext: j.ciphertext as string,
      ciphertextMetadata: j.ciphertextMetadata as string,
      initializationVector: j.initializationVector as string,
      authenticationTag: j.authenticationTag as string,
    });
  };
  const lanes = Array.from({ length: 8 }, async (_, lane) => {
    for (let i = lane; i < count; i += 8) await one();
  });
  await Promise.all(lanes);
  return out;
}
