/**
 * A deployed proxy as the bench's target (--target https://host:port/prefix): no local proxy, no
 * SoftHSM2 token, no baseline. Builds the endpoint (CA, optional client certificate for mTLS) and
 * makes the first signed request, so that a wrong URL, certificate or credential is reported as such
 * before any load runs.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { randomUUID } from 'node:crypto';
import type { RunStats } from './load';
import { ms } from './report';
import { Credential, encryptBody, Endpoint, Keys, post } from './workload';

export interface TargetOptions {
  url: string;
  accessKeyId: string;
  secretFile: string;
  keyIds: string[];
  region: string;
  ca?: string;
  cert?: string;
  key?: string;
}

export interface RemoteTarget {
  endpoint: Endpoint;
  basePath: string;
  cred: Credential;
  keys: Keys;
}

/** A bad target setting or a target that refuses us: reported in one line, exit code 1. */
export class TargetError extends Error {}

const read = (file: string, what: string): Buffer => {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new TargetError(`${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
};

export function remoteTarget(o: TargetOptions): RemoteTarget {
  let url: URL;
  try {
    url = new URL(o.url);
  } catch {
    throw new TargetError(`--target: not a URL: ${o.url}`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new TargetError('--target: https://host:port/prefix (or http:// behind a TLS terminator)');
  if ((o.cert === undefined) !== (o.key === undefined)) throw new TargetError('--cert and --key go together (client certificate for mTLS)');
  const tls = url.protocol === 'https:';
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = Number(url.port || (tls ? 443 : 80));
  // KMS calls <uri endpoint><uri path>, the path ending in /kms/xks/v1; accept the prefix alone too.
  const prefix = url.pathname.replace(/\/+$/, '');
  const basePath = prefix.endsWith('/kms/xks/v1') ? prefix : `${prefix}/kms/xks/v1`;
  const secretAccessKey = read(o.secretFile, '--secret-file').toString('utf8').trim();
  if (!secretAccessKey) throw new TargetError(`--secret-file ${o.secretFile} is empty`);
  if (o.keyIds.length === 0) throw new TargetError('--key-id: at least one external key id');
  return {
    endpoint: {
      host,
      port,
      hostHeader: url.host,
      region: o.region,
      tls: tls
        ? {
            ca: o.ca ? read(o.ca, '--ca') : undefined,
            cert: o.cert ? read(o.cert, '--cert') : undefined,
            key: o.key ? read(o.key, '--key') : undefined,
            servername: isIP(host) ? undefined : host,
          }
        : undefined,
    },
    basePath,
    cred: { accessKeyId: o.accessKeyId, secretAccessKey },
    // Decrypts replay ciphertexts of the first key; encrypt and metadata spread over all of them.
    keys: { encrypt: o.keyIds, decrypt: o.keyIds[0] as string },
  };
}

/** What to check when the first request fails, by the failure. */
function advice(status: number, errorName: string): string {
  if (status === 401) return 'the proxy rejected the signature: check --access-key-id, --secret-file and --region (the key store may pin regions)';
  if (status === 403) return 'the key store\'s policy denied the bench principal: allow it, or use a key this credential may use';
  if (status === 404 && errorName === 'KeyNotFoundException') return 'no such key in this key store: check --key-id';
  if (status === 404) return 'no key store at this path: check the prefix in --target';
  return 'see the proxy\'s log';
}

/** A field of an answer as text: a string as it is, anything else (a proxy that is no XKS proxy) as JSON. */
const text = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v));

/**
 * Health, then one encrypt per key: fails with the reason (connection, TLS, authentication, key) in a
 * single line, so a load tester can fix the command before anything is measured.
 */
export async function checkTarget(t: RemoteTarget): Promise<void> {
  const where = `${t.endpoint.tls ? 'https' : 'http'}://${t.endpoint.hostHeader}${t.basePath}`;
  const call = async (path: string, body: string): Promise<void> => {
    let r: { status: number; json: Record<string, unknown> };
    try {
      r = await post(t.endpoint, path, body, t.cred);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      const hint = /certificate|self.signed|CERT|unable to verify/i.test(`${err.code} ${err.message}`) ? ' (TLS: pass the CA that issued the proxy\'s certificate with --ca)' : '';
      throw new TargetError(`cannot reach ${where}: ${err.code ?? ''} ${err.message}${hint}`.replace(/\s+/g, ' '));
    }
    if (r.status === 200) return;
    const errorName = text(r.json.errorName ?? r.json.raw ?? '');
    throw new TargetError(`${where}${path.slice(t.basePath.length)}: HTTP ${r.status} ${errorName}${r.json.errorMessage ? `: ${text(r.json.errorMessage)}` : ''} — ${advice(r.status, errorName)}`);
  };
  await call(`${t.basePath}/health`, JSON.stringify({ requestMetadata: { kmsRequestId: randomUUID(), kmsOperation: 'KmsHealthCheck' } }));
  for (const key of t.keys.encrypt) await call(`${t.basePath}/keys/${key}/encrypt`, encryptBody());
}

/** The KMS-shaped check's verdict: whether the target served KMS's rate within its timeout, and why not. */
export interface KmsCheck {
  rate: number;
  timeoutMs: number;
  run: RunStats;
  withinLimits: boolean;
  /** Why not, when not. */
  problems: string[];
}

/** Late sends above this share make the run something other than what KMS would send. */
const LATE_SHARE = 0.001;

export function kmsCheck(run: RunStats, rate: number, timeoutMs: number): KmsCheck {
  const problems: string[] = [];
  // A 1% shortfall in req/s is pacing noise; more means the target (or this load generator) cannot keep up.
  if (run.rps < rate * 0.99) problems.push(`answered ${run.rps} req/s, below the ${rate} KMS may send`);
  // KMS sends on its own schedule: a request sent late here waited for a busy connection (or for this
  // generator) instead of at the target, so the latency measured leaves that wait out and the rate
  // offered was not KMS's. The run cannot vouch for the target either way.
  const sent = Math.max(run.sent, run.requests, 1);
  if (run.late > sent * LATE_SHARE) {
    problems.push(
      `${run.late} requests (${((run.late / sent) * 100).toFixed(1)}%) were sent late by the load generator, so this run did not offer ${rate} req/s as KMS would and its latency is understated: raise --connections, or run the bench on a machine that can keep up`,
    );
  }
  if (run.latencyMs.p99 > timeoutMs) problems.push(`p99 ${ms(run.latencyMs.p99)} ms is over KMS's ${timeoutMs} ms timeout`);
  if (run.withinKmsTimeout < 0.999) problems.push(`only ${(run.withinKmsTimeout * 100).toFixed(2)}% of requests answered within ${timeoutMs} ms`);
  const failed = run.non2xx + run.errors + run.timeouts;
  if (failed > 0) problems.push(`${failed} requests failed (${JSON.stringify(run.errorNames)})`);
  return { rate, timeoutMs, run, withinLimits: problems.length === 0, problems };
}
