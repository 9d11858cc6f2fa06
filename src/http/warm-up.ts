import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes, randomUUID } from 'node:crypto';
import { buildRuntimeConfig, RuntimeConfig } from '../config/load';
import type { ProxyConfig } from '../config/schema';
import type { CryptoEngine } from '../engine/types';
import { silentLogger } from '../log';
import { Metrics } from '../metrics';
import { generateCredential } from '../sigv4/credentials';
import { signRequest, SigningCredential } from '../sigv4/sign';
import { createXksHandler, HandlerServices } from './pipeline';

const PREFIX = '/xks-proxy-warm-up';
const KEY_ID = 'warm-up';
const REGION = 'us-east-1';
const PARALLEL = 4;
/** A warm-up request that takes this long means something is wrong; the warm-up gives up (see app.ts). */
const REQUEST_TIMEOUT_MS = 5000;
/** 64 bytes, as KMS's GenerateDataKey sends with an encryption context. */
const AAD = randomBytes(64).toString('base64');

type Sealed = { ciphertext: string; initializationVector: string; authenticationTag: string; ciphertextMetadata?: string };

export interface WarmUpResult {
  requests: number;
  /** 200 answers by operation path ("health", "metadata", "encrypt", "decrypt"). */
  answered: Record<string, number>;
  /** Answers other than 200, by status: the path still ran, but an HSM or key problem shows here first. */
  failures: Record<string, number>;
  ms: number;
}

/**
 * The request path's warm-up, before the XKS port opens: `requests` signed requests of all four
 * operations through a second instance of the real pipeline, over real loopback HTTP, so that the
 * first customer requests meet compiled code (node:http's parser, SigV4, JSON, policy, the operations
 * and the answer) rather than V8's interpreter. The HSM calls were warmed before, on every session
 * (engine.warmUp); here a stand-in engine answers without the HSM, because a key looked up by label
 * here would be a key the fleet learns about (an HSM without the health key's object, which falls back
 * to a session key, then counted as missing a key version and DEGRADED), or a customer key.
 *
 * It touches nothing a customer or an auditor sees: its own key store at a path prefix the listener
 * never routes (it is in no runtime but this one), a random credential that exists only here, an
 * allow-all group of its own, no audit, no request log, and a metrics registry that is thrown away.
 */
export async function warmUpRequestPath(svc: HandlerServices, requests: number): Promise<WarmUpResult> {
  const started = performance.now();
  const failures: Record<string, number> = {};
  const answered: Record<string, number> = {};
  if (requests <= 0) return { requests: 0, answered, failures, ms: 0 };
  const { accessKeyId, secretAccessKey } = generateCredential();
  const runtime = warmUpRuntime(svc.runtime().config, accessKeyId, secretAccessKey);
  const credential: SigningCredential = { accessKeyId, secret: Buffer.from(secretAccessKey) };
  const handler = createXksHandler({
    ...svc,
    engine: standInEngine(svc.engine),
    // A warm-up request must not run a deep check (the HSM's, the health metrics' and log's business).
    health: { get: () => Promise.resolve({ status: 'ACTIVE' as const, checkedAt: Date.now(), latencyMs: 0 }) },
    runtime: () => runtime,
    logger: silentLogger,
    metrics: new Metrics(false),
    audit: undefined,
    overload: undefined,
    draining: () => false,
  });
  const server = http.createServer(handler);
  server.on('checkContinue', handler.checkContinue);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // Exclusive: in a cluster worker, listen(0) otherwise asks the primary for a socket, and every worker
    // gets the same one (same port), so one worker's warm-up connection could be accepted by another
    // worker's warm-up server, which knows only its own random credential: a 401 (issue 21).
    server.listen({ port: 0, host: '127.0.0.1', exclusive: true }, resolve);
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: PARALLEL });
  const port = (server.address() as AddressInfo).port;
  try {
    let next = 0;
    const lane = async (): Promise<void> => {
      let sealed: Sealed | undefined;
      for (let i = next++; i < requests; i = next++) {
        const kind = i % 4;
        const [path, body] = warmUpRequest(kind === 3 && !sealed ? 2 : kind, sealed);
        const answer = await post(agent, port, path, body, credential);
        if (answer.status !== 200) {
          failures[answer.status] = (failures[answer.status] ?? 0) + 1;
          continue;
        }
        const operation = path.slice(path.lastIndexOf('/') + 1);
        answered[operation] = (answered[operation] ?? 0) + 1;
        if (operation === 'encrypt') sealed = answer.json as Sealed;
      }
    };
    await Promise.all(Array.from({ length: PARALLEL }, lane));
  } finally {
    agent.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    handler.flush();
  }
  return { requests, answered, failures, ms: Math.round(performance.now() - started) };
}

/** The real engine for what reads state; encrypt, decrypt and key checks answer at once, with no HSM call. */
function standInEngine(real: CryptoEngine): CryptoEngine {
  return {
    encrypt: async (_label, plaintext) => ({ iv: randomBytes(12), ciphertext: randomBytes(plaintext.length), tag: randomBytes(16) }),
    decrypt: async (_label, _iv, _aad, ciphertext) => randomBytes(ciphertext.length),
    checkKey: async () => undefined,
    info: () => real.info(),
    poolStats: () => real.poolStats(),
    isConnected: () => real.isConnected(),
    status: () => real.status(),
    close: () => Promise.resolve(),
  };
}

/**
 * The warm-up's own configuration, built and checked by the loader like any other: the real settings
 * (server, limits, ...), one key store at a prefix of its own with the one credential, one allow-all
 * group with one key. No environment is read: the credential is inline, and the HSM PINs are
 * placeholders (the stand-in engine never logs in). No group is quorum-protected, so governance has
 * nothing to check.
 */
function warmUpRuntime(real: ProxyConfig, accessKeyId: string, secretAccessKey: string): RuntimeConfig {
  const { hsm: _hsm, hsms, keyStores: _keyStores, groups: _groups, governance: _governance, ...settings } = real;
  return buildRuntimeConfig(
    {
      ...settings,
      hsms: hsms.map((h) => ({ ...h, pin: { value: 'unused' } })),
      keyStores: [{ name: KEY_ID, pathPrefix: PREFIX, regions: [REGION], credentials: [{ accessKeyId, secretAccessKey: { value: secretAccessKey } }], groups: [KEY_ID] }],
      groups: [{ name: KEY_ID, policy: { rules: [{ id: KEY_ID, effect: 'allow' }] }, keys: [{ id: KEY_ID, label: KEY_ID }] }],
    },
    {},
  );
}

const metadata = (kmsOperation: string): Record<string, string> => ({
  awsPrincipalArn: 'arn:aws:iam::111122223333:role/xks-proxy-warm-up',
  kmsKeyArn: 'arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000',
  kmsOperation,
  kmsRequestId: randomUUID(),
  kmsViaService: 'ebs',
});

/** 0 health, 1 metadata, 2 encrypt, 3 decrypt of an earlier encrypt's result. */
function warmUpRequest(kind: number, sealed: Sealed | undefined): [string, string] {
  const keyPath = `${PREFIX}/kms/xks/v1/keys/${KEY_ID}`;
  switch (kind) {
    case 0:
      return [`${PREFIX}/kms/xks/v1/health`, JSON.stringify({ requestMetadata: { kmsRequestId: randomUUID(), kmsOperation: 'KmsHealthCheck' } })];
    case 1:
      return [`${keyPath}/metadata`, JSON.stringify({ requestMetadata: metadata('DescribeKey') })];
    case 2:
      return [`${keyPath}/encrypt`, JSON.stringify({ requestMetadata: metadata('Encrypt'), plaintext: randomBytes(32).toString('base64'), encryptionAlgorithm: 'AES_GCM', additionalAuthenticatedData: AAD })];
    default:
      return [
        `${keyPath}/decrypt`,
        JSON.stringify({
          requestMetadata: metadata('Decrypt'),
          encryptionAlgorithm: 'AES_GCM',
          ciphertext: sealed?.ciphertext,
          initializationVector: sealed?.initializationVector,
          authenticationTag: sealed?.authenticationTag,
          ciphertextMetadata: sealed?.ciphertextMetadata,
          additionalAuthenticatedData: AAD,
        }),
      ];
  }
}

function post(agent: http.Agent, port: number, path: string, body: string, credential: SigningCredential): Promise<{ status: number; json: unknown }> {
  const headers = signRequest({ method: 'POST', host: `127.0.0.1:${port}`, path, body, headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } }, credential, REGION);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'POST', headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        let json: unknown;
        try {
          json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, json });
      });
    });
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}
