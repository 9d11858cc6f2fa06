import http from 'node:http';
import https from 'node:https';
import aws4 from 'aws4';
import { ProxyApp } from '../../src/app';
import { buildRuntimeConfig } from '../../src/config/load';
import type { ProxyConfigInput } from '../../src/config/schema';
import { silentLogger } from '../../src/log';
import { generateCredential } from '../../src/sigv4/credentials';
import type { Pkcs11Module } from '../../src/engine/pkcs11-engine';
import { testHsm } from './hsm';

export interface Credential {
  accessKeyId: string;
  secretAccessKey: string;
}

export function newCredential(): Credential {
  return generateCredential();
}

type KeyStoreInput = ProxyConfigInput['keyStores'][number];
type GroupInput = NonNullable<ProxyConfigInput['groups']>[number];

const ALLOW_ALL = { rules: [{ id: 'allow-all', effect: 'allow' as const }] };

/** A key store with its own group of keys (allow-all policy unless given). */
export function keyStoreWithKeys(
  name: string,
  pathPrefix: string,
  creds: Credential[],
  keys: GroupInput['keys'],
  more: { policy?: GroupInput['policy']; keyStore?: Partial<KeyStoreInput>; group?: Partial<GroupInput> } = {},
): { keyStore: KeyStoreInput; group: GroupInput } {
  return {
    keyStore: {
      name,
      pathPrefix,
      credentials: creds.map((c) => ({ accessKeyId: c.accessKeyId, secretAccessKey: { value: c.secretAccessKey } })),
      groups: [`${name}-keys`],
      ...more.keyStore,
    },
    group: { name: `${name}-keys`, policy: more.policy ?? ALLOW_ALL, keys, ...more.group },
  };
}

/** A config for the test token; key stores, groups and limits come from the caller. */
export function testConfig(stores: { keyStore: KeyStoreInput; group: GroupInput }[], extra: Partial<ProxyConfigInput> = {}): ProxyConfigInput {
  const t = testHsm();
  const hsm: ProxyConfigInput['hsm'] = {
    modulePath: t.modulePath,
    environment: t.environment,
    libraryParameters: t.libraryParameters,
    tokenLabel: t.tokenLabel,
    pin: { value: t.pin },
    sessionPoolSize: 4,
    healthKeyLabel: 'health-key',
    ...extra.hsm,
  };
  return {
    // The request-path warm-up adds a second to every start; its own test turns it on.
    server: { host: '127.0.0.1', port: 0, insecurePlainHttp: true, warmUpRequests: 0, ...extra.server },
    ops: { host: '127.0.0.1', port: 0, ...extra.ops },
    // Functional suites run two at a time beside spawned CLIs on two cores: event-loop shedding (its own
    // suites, test/overload.test.ts and the soak, run alone) would turn that contention into random 429s.
    limits: { eventLoopShedMs: 0, ...extra.limits },
    proxy: extra.proxy,
    hsm,
    keyStores: stores.map((s) => s.keyStore),
    groups: stores.map((s) => s.group),
    audit: extra.audit,
  };
}

export async function startProxy(config: ProxyConfigInput, createModule?: () => Pkcs11Module): Promise<ProxyApp> {
  return ProxyApp.start({ runtime: buildRuntimeConfig(config), logger: silentLogger, createModule });
}

export interface XksResponse {
  status: number;
  body: Record<string, unknown>;
  headers: http.IncomingHttpHeaders;
}

export interface SendOptions {
  method?: string;
  region?: string;
  service?: string;
  /** Changes the body after signing (a valid signature for a different body). */
  tamperBody?: (body: string) => string;
  /** Edits the signed headers before sending. */
  editHeaders?: (headers: Record<string, string | number | string[]>) => void;
  unsigned?: boolean;
  date?: Date;
  /** Send over TLS with these options (CA, client certificate). */
  tls?: https.RequestOptions;
}

/** Sends one request signed by aws4 (an independent SigV4 implementation). */
export function send(port: number, path: string, payload: unknown, cred: Credential | undefined, opts: SendOptions = {}): Promise<XksResponse> {
  const body = typeof payload === 'string' ? payload : JSON.stringify(payload);
  const host = `127.0.0.1:${port}`;
  const req: aws4.Request & { headers: Record<string, string | number> } = {
    host,
    path,
    method: opts.method ?? 'POST',
    service: opts.service ?? 'kms-xks-proxy',
    region: opts.region ?? 'us-east-1',
    body,
    headers: { 'content-type': 'application/json' },
  };
  if (opts.date) req.headers['X-Amz-Date'] = opts.date.toISOString().replace(/[:-]|\.\d{3}/g, '');
  if (cred && !opts.unsigned) aws4.sign(req, cred);
  const headers = req.headers as Record<string, string | number | string[]>;
  opts.editHeaders?.(headers);
  const sent = opts.tamperBody ? opts.tamperBody(body) : body;
  headers['content-length'] = Buffer.byteLength(sent);
  delete headers['Content-Length'];
  return new Promise((resolve, reject) => {
    const request = opts.tls ? https.request : http.request;
    const r = request({ host: '127.0.0.1', port, path, method: req.method, headers, agent: false, ...opts.tls }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: Record<string, unknown>;
        try {
          parsed = text ? (JSON.parse(text) as Record<string, unknown>) : {};
        } catch {
          parsed = { raw: text };
        }
        resolve({ status: res.statusCode ?? 0, body: parsed, headers: res.headers });
      });
    });
    r.on('error', reject);
    r.end(sent);
  });
}

/** A plain GET (probes, metrics, the 405 check) on a fresh connection: status, body and how long it took. */
export function get(port: number, path: string): Promise<{ status: number; text: string; ms: number }> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text, ms: Date.now() - started }));
      })
      .on('error', reject);
  });
}

export const PRINCIPAL = 'arn:aws:iam::123456789012:user/Alice';
export const KMS_KEY_ARN = 'arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';

export function keyMetadata(kmsOperation: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { awsPrincipalArn: PRINCIPAL, kmsKeyArn: KMS_KEY_ARN, kmsOperation, kmsRequestId: `req-${Math.random().toString(16).slice(2)}`, ...extra };
}

export const b64 = (b: Buffer | string): string => Buffer.from(b).toString('base64');
