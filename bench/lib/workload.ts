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
import https from 'node:https';
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

/**
 * The JSON that softhsm/setup-token.sh (secrets/primary.json) and `xks-admin credential add` print: what
 * KMS is given for a key store. Returns its credential and URI path.
 */
export function parseCredentialJson(text: string): { cred: Credential; uriPath: string | undefined } {
  const printed = JSON.parse(text) as {
    XksProxyUriPath?: string;
    XksProxyAuthenticationCredential: { AccessKeyId: string; RawSecretAccessKey: string };
  };
  const c = printed.XksProxyAuthenticationCredential;
  return { cred: { accessKeyId: c.AccessKeyId, secretAccessKey: c.RawSecretAccessKey }, uriPath: printed.XksProxyUriPath };
}

/** Where the requests go: the local proxy the bench started, or a deployed one (--target). */
export interface Endpoint {
  host: string;
  port: number;
  /** The Host header, which SigV4 signs (host, or host:port when the port is not the scheme's default). */
  hostHeader: string;
  /** SigV4 region of the credential scope. */
  region: string;
  /** HTTPS with this CA and optional client certificate (mTLS); plain HTTP when absent. */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer; servername?: string };
}

export function localEndpoint(port: number): Endpoint {
  return { host: '127.0.0.1', port, hostHeader: `127.0.0.1:${port}`, region: 'us-east-1' };
}

/** Key ids the workload uses: encrypt and metadata spread over `encrypt`, decrypt uses `decrypt`. */
export interface Keys {
  encrypt: string[];
  decrypt: string;
}

/** The demo token's keys (softhsm/setup-token.sh): both encrypt, only demo-key-1 may decrypt. */
export const DEMO_KEYS: Keys = { encrypt: ['demo-key-1', 'demo-key-2'], decrypt: 'demo-key-1' };

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
const MAX_SIGNATURE_AGE_MS = 60_000;

export function signRequest(host: string, path: string, body: string, cred: Credential, region = 'us-east-1'): Record<string, string> {
  const req = { host, path, method: 'POST', service: 'kms-xks-proxy', region, body, headers: { 'content-type': 'application/json' } };
  aws4.sign(req, cred);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) headers[k] = String(v);
  return headers;
}

function metadata(kmsOperation: string): Record<string, string> {
  return { awsPrincipalArn: PRINCIPAL, kmsKeyArn: KEY_ARN, kmsOperation, kmsRequestId: randomUUID() };
}

/**
 * Sizes of the encrypted data: small is a GenerateDataKey (32-byte data key, 64 bytes of AAD); large is
 * the most XKS allows (4300-byte plaintext, 8 KiB of AAD), where hashing, parsing and the HSM call cost most.
 */
export type Payload = 'small' | 'large';
const PAYLOAD_BYTES: Record<Payload, { plaintext: number; aad: number }> = {
  small: { plaintext: 32, aad: 64 },
  large: { plaintext: 4300, aad: 8192 },
};

export function encryptBody(payload: Payload = 'small'): string {
  const size = PAYLOAD_BYTES[payload];
  return JSON.stringify({
    requestMetadata: metadata('GenerateDataKey'),
    plaintext: randomBytes(size.plaintext).toString('base64'),
    encryptionAlgorithm: 'AES_GCM',
    additionalAuthenticatedData: randomBytes(size.aad).toString('base64'),
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

function bodyFor(op: Op, i: number, sealed: readonly Sealed[], base: string, keys: Keys, payload: Payload): { path: string; body: string } {
  const spread = keys.encrypt[i % keys.encrypt.length] as string;
  switch (op) {
    case 'encrypt':
      return { path: `${base}/keys/${spread}/encrypt`, body: encryptBody(payload) };
    case 'decrypt':
      return { path: `${base}/keys/${keys.decrypt}/decrypt`, body: decryptBody(sealed[i % sealed.length] as Sealed) };
    case 'metadata': {
      const { awsPrincipalArn, kmsRequestId } = metadata('DescribeKey');
      return { path: `${base}/keys/${spread}/metadata`, body: JSON.stringify({ requestMetadata: { awsPrincipalArn, kmsOperation: 'DescribeKey', kmsRequestId } }) };
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
    private readonly endpoint: Endpoint,
    private readonly cred: Credential,
    mix: Mix,
    size: number,
    basePath: string,
    sealed: readonly Sealed[],
    keys: Keys = DEMO_KEYS,
    /** Size of encrypts; decrypts take theirs from `sealed`. */
    payload: Payload = 'small',
  ) {
    const shares = MIXES[mix];
    for (const [op, share] of Object.entries(shares) as [Op, number][]) {
      const n = Math.max(1, Math.round(size * share));
      this.counts[op] = n;
      for (let i = 0; i < n; i++) this.entries.push({ op, ...bodyFor(op, i, sealed, basePath, keys, payload), headers: {}, refreshAt: 0 });
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
    e.headers = signRequest(this.endpoint.hostHeader, e.path, e.body, this.cred, this.endpoint.region);
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

/** What an error answer's body names: its XKS errorName, else "HTTP <status>". */
export function errorNameOf(status: number, body: string): string {
  try {
    const name = (JSON.parse(body) as { errorName?: unknown }).errorName;
    if (typeof name === 'string') return name;
  } catch {
    /* not JSON */
  }
  return `HTTP ${status}`;
}

/** One signed POST outside autocannon (setup and checks); over TLS the server certificate is verified. */
export function post(to: Endpoint, path: string, body: string, cred: Credential, timeoutMs = 10_000): Promise<{ status: number; json: Record<string, unknown> }> {
  const headers = signRequest(to.hostHeader, path, body, cred, to.region);
  const request = to.tls ? https.request : http.request;
  return new Promise((resolve, reject) => {
    const req = request({ host: to.host, port: to.port, path, method: 'POST', headers, agent: false, timeout: timeoutMs, ...to.tls }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: Record<string, unknown>;
        try {
          json = JSON.parse(text) as Record<string, unknown>;
        } catch {
          json = { raw: text };
        }
        resolve({ status: res.statusCode ?? 0, json });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${to.hostHeader} within ${timeoutMs / 1000} s`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** Encrypts `count` data keys through the proxy; decrypt requests replay them. */
export async function makeCiphertexts(to: Endpoint, basePath: string, cred: Credential, count: number, keys: Keys = DEMO_KEYS, payload: Payload = 'small'): Promise<Sealed[]> {
  const out: Sealed[] = [];
  const one = async (): Promise<void> => {
    const body = encryptBody(payload);
    const aad = (JSON.parse(body) as { additionalAuthenticatedData: string }).additionalAuthenticatedData;
    const r = await post(to, `${basePath}/keys/${keys.decrypt}/encrypt`, body, cred);
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
