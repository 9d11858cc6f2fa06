/**
 * What one XKS request costs, stage by stage: CPU microseconds per request for node:http's parse and
 * answer, SigV4, JSON, policy, the HSM call, building the answer, the request log, the metrics and the
 * audit line, and the whole request through the proxy's handler. One process, one SoftHSM2 demo token,
 * no network (bench/lib/in-process.ts), so the figures do not depend on a load generator sharing the box.
 *
 *   npm run build:bench && node dist-bench/bench/stage-costs.js [--requests 20000] [--rounds 5] [--mix realistic] [--audit]
 *
 * Every stage runs the product's own function over the bench's pool of signed requests (bench/lib/workload.ts),
 * `--requests` times per round, timed with process.cpuUsage() (user + system CPU of this process); the
 * table gives the median round. `whole request` is the proxy's handler end to end (routing, every step,
 * the response listeners) over in-process connections; `node:http` is a bare handler that reads the body
 * and answers a fixed 150-byte body (bench/baseline-server.ts) the same way; `unaccounted` is what the
 * whole request costs beyond node:http and the listed stages: promise hops, timers, listeners, stage plumbing.
 *
 * The table's last line prices the floor (bench/lib/floor.ts, as `npm run bench -- --floor` serves it): the
 * must-haves of a request with the product's own code and none of the proxy's extras.
 *
 * `--only e2e` (or `floor`, `bare`) runs only the whole request through the proxy (or the floor, the bare handler), `--requests N`
 * times after a warm-up, for an instruction count that does not depend on load (bench/callgrind.sh runs it
 * under valgrind with two request counts and divides the difference).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { parse as parseYaml, stringify } from 'yaml';
import { ProxyApp } from '../src/app';
import { AuditLog } from '../src/audit/log';
import { loadConfigFile } from '../src/config/load';
import type { AuditEvent } from '../src/audit/log';
import type { KeyStoreRuntime } from '../src/config/load';
import { Deadline } from '../src/deadline';
import type { CryptoEngine, GcmResult } from '../src/engine/types';
import type { HealthMonitor } from '../src/health/monitor';
import { route } from '../src/http/router';
import { createLogger } from '../src/log';
import { completeSigV4, preverifySigV4 } from '../src/sigv4/verify';
import { encodeMetadata, hsmAad } from '../src/xks/ciphertext-format';
import type { Grant } from '../src/xks/authorize';
import { Operation, OperationRequest, OperationSpec, OPERATIONS } from '../src/xks/operations';
import { Limits, METADATA_FIELDS, parseJsonObject, RequestMetadata } from '../src/xks/requests';
import { baselineHandler } from './lib/baseline';
import { floorHandler } from './lib/floor';
import { drive, wireBytes } from './lib/in-process';
import { ROOT } from './lib/paths';
import { Credential, localEndpoint, makeCiphertexts, Mix, MIXES, SignedPool } from './lib/workload';

interface Options {
  requests: number;
  rounds: number;
  mix: Mix;
  connections: number;
  only: 'all' | 'e2e' | 'floor' | 'bare';
  json: string | undefined;
  /** The proxy writes its audit log in the whole-request runs (as `npm run bench -- --audit`). */
  audit: boolean;
}

function options(argv: string[]): Options {
  const o: Options = { requests: 20_000, rounds: 5, mix: 'realistic', connections: 1, only: 'all', json: undefined, audit: false };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--requests':
        o.requests = Number(v);
        i++;
        break;
      case '--rounds':
        o.rounds = Number(v);
        i++;
        break;
      case '--connections':
        o.connections = Number(v);
        i++;
        break;
      case '--mix':
        if (!(v! in MIXES)) throw new Error(`--mix must be one of ${Object.keys(MIXES).join(', ')}`);
        o.mix = v as Mix;
        i++;
        break;
      case '--only':
        if (v !== 'all' && v !== 'e2e' && v !== 'bare' && v !== 'floor') throw new Error('--only must be all, e2e, floor or bare');
        o.only = v;
        i++;
        break;
      case '--audit':
        o.audit = true;
        break;
      case '--json':
        o.json = v;
        i++;
        break;
      default:
        throw new Error(`unknown option ${argv[i]}`);
    }
  }
  return o;
}

/** CPU microseconds (user + system) that fn takes, per iteration, over n iterations. */
async function cpuUs(n: number, fn: (i: number) => unknown): Promise<number> {
  const before = process.cpuUsage();
  for (let i = 0; i < n; i++) {
    const r = fn(i);
    if (r instanceof Promise) await r;
  }
  const d = process.cpuUsage(before);
  return (d.user + d.system) / n;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
};

interface Parsed {
  path: string;
  rawHeaders: string[];
  body: Buffer;
  wire: Buffer;
}

/** The pool's requests as the server sees them: rawHeaders as node:http gives them, and the wire bytes. */
function requestsOf(pool: SignedPool): Parsed[] {
  const out: Parsed[] = [];
  for (let i = 0; i < pool.size; i++) {
    const r = pool.next();
    const rawHeaders: string[] = [];
    for (const [k, v] of Object.entries(r.headers)) rawHeaders.push(k, v);
    out.push({ path: r.path, rawHeaders, body: Buffer.from(r.body), wire: wireBytes(r.method, r.path, r.headers, r.body) });
  }
  return out;
}

interface StageContext {
  keyStore: KeyStoreRuntime;
  limits: Limits;
  engine: CryptoEngine;
  health: Pick<HealthMonitor, 'get'>;
}

/** One pool request's stages, each the product's own code on inputs prepared once. */
interface Stages {
  operation: Operation;
  metadata: RequestMetadata;
  keyVersion: number | undefined;
  group: string | undefined;
  sigv4(): void;
  parse(): void;
  authorize(): void;
  hsm(): Promise<void>;
  answer(): void;
}

const b64 = (b: Buffer): string => b.toString('base64');
/** Deadlines for the HSM stage: long enough never to fire, as few timers as a request has. */
const deadline = (): Deadline => new Deadline(10_000);

async function stagesOf(r: Parsed, ctx: StageContext): Promise<Stages> {
  const { keyStore, limits, engine } = ctx;
  const rt = route(r.path);
  if (rt.kind !== 'xks') throw new Error(`pool request ${r.path} does not route`);
  const sigv4 = (): void => {
    const pre = preverifySigV4(r.rawHeaders, { secrets: keyStore.secrets, regions: keyStore.regions, clockSkewMs: 300_000, now: Date.now() });
    if (!pre.ok) throw new Error(pre.reason);
    const done = completeSigV4(pre, { method: 'POST', path: r.path, body: r.body });
    if (!done.ok) throw new Error(done.reason);
  };
  const json = () => parseJsonObject(r.body);
  const timed = async <T>(call: (d: Deadline) => Promise<T>): Promise<T> => {
    const d = deadline();
    try {
      return await call(d);
    } finally {
      d.clear();
    }
  };
  /** The request parsed and authorized once, and the stages every operation has alike. */
  const common = <R extends OperationRequest, G extends Grant>(spec: OperationSpec<R, G>, keyId: string | undefined) => {
    const req = spec.parse(json(), limits);
    const grant = spec.authorize(req, keyId, keyStore);
    const stages = { operation: rt.operation, metadata: req.metadata, sigv4, parse: () => spec.parse(json(), limits), authorize: () => spec.authorize(req, keyId, keyStore) };
    return { req, grant, stages };
  };
  switch (rt.operation) {
    case 'Encrypt': {
      const { req, grant, stages } = common(OPERATIONS.Encrypt, rt.keyId);
      const version = grant.key.current;
      const metadata = encodeMetadata(version.version);
      const aad = hsmAad(req.aad, metadata);
      let sealed: GcmResult = await engine.encrypt(version.label, req.plaintext, aad);
      return {
        ...stages,
        keyVersion: version.version,
        group: grant.key.group.name,
        hsm: async () => void (sealed = await timed((d) => engine.encrypt(version.label, req.plaintext, aad, d))),
        answer: () =>
          JSON.stringify({ ciphertext: b64(sealed.ciphertext), ciphertextMetadata: b64(metadata), initializationVector: b64(sealed.iv), authenticationTag: b64(sealed.tag) }),
      };
    }
    case 'Decrypt': {
      const { req, grant, stages } = common(OPERATIONS.Decrypt, rt.keyId);
      const version = grant.key.current;
      const aad = hsmAad(req.aad, req.ciphertextMetadata);
      let plaintext = await engine.decrypt(version.label, req.iv, aad, req.ciphertext, req.tag);
      return {
        ...stages,
        keyVersion: version.version,
        group: grant.key.group.name,
        hsm: async () => void (plaintext = await timed((d) => engine.decrypt(version.label, req.iv, aad, req.ciphertext, req.tag, d))),
        answer: () => JSON.stringify({ plaintext: b64(plaintext) }),
      };
    }
    case 'GetKeyMetadata': {
      const { grant, stages } = common(OPERATIONS.GetKeyMetadata, rt.keyId);
      const label = grant.key.current.label;
      return {
        ...stages,
        keyVersion: undefined,
        group: grant.key.group.name,
        // One check per version, answered from the engine's cache within hsm.keyCheckCacheMs (as in production).
        hsm: () => timed((d) => engine.checkKey(label, d)),
        answer: () => JSON.stringify({ keySpec: 'AES_256', keyUsage: grant.key.usageList, keyStatus: 'ENABLED' }),
      };
    }
    case 'GetHealthStatus': {
      const { stages } = common(OPERATIONS.GetHealthStatus, undefined);
      return {
        ...stages,
        keyVersion: undefined,
        group: undefined,
        // The deep check's cached report, as GetHealthStatus reads it.
        hsm: async () => void (await ctx.health.get()),
        answer: () => JSON.stringify({ xksProxyFleetSize: 1, xksProxyVendor: 'v', xksProxyModel: 'm', ekmVendor: 'e', ekmFleetDetails: [{ id: 'x', model: 'y', healthStatus: 'ACTIVE' }] }),
      };
    }
  }
}

/** The request log's and audit's entry for a served request, with the fields requestSummary (src/http/outcome.ts) fills. */
function summaryOf(r: Parsed, s: Stages, keyStore: string): AuditEvent {
  const rt = route(r.path);
  const entry: AuditEvent = {
    keyStore,
    operation: s.operation,
    keyId: rt.kind === 'xks' ? rt.keyId : undefined,
    keyVersion: s.keyVersion,
    group: s.group,
    decision: s.group ? 'allow' : undefined,
    policyRule: s.group ? 'allow-demo' : undefined,
  };
  for (const f of METADATA_FIELDS) entry[f.name] = s.metadata[f.name];
  return { ...entry, status: 200, outcome: 'success', errorMessage: undefined, clientAborted: undefined, ms: 0.41 };
}

const AUDIT_STAGE = 'audit line (hash chain + write)';
const FLOOR = 'the must-haves alone (the floor)';

async function main(): Promise<void> {
  const opt = options(process.argv.slice(2));
  const dir = mkdtempSync(join(os.tmpdir(), 'xks-stages-'));
  let app: ProxyApp | undefined;
  try {
    execFileSync('bash', [join(ROOT, 'softhsm', 'setup-token.sh'), dir, '0'], { stdio: ['ignore', 'ignore', 'inherit'] });
    const config = parseYaml(readFileSync(join(dir, 'config.yaml'), 'utf8')) as Record<string, Record<string, unknown>>;
    config.server = { ...config.server, port: 0, workers: 1 };
    config.ops = { ...config.ops, enabled: false };
    config.hsm = { ...config.hsm, asyncCalls: false };
    if (opt.audit) config.audit = { file: join(dir, 'audit.log') };
    // Under valgrind everything runs some 50 times slower: no event-loop shedding, no deadline, or the
    // instruction count would be of refusals.
    if (opt.only !== 'all') {
      config.limits = { ...config.limits, eventLoopShedMs: 0, deadlineMs: 10_000 };
      // The request-path warm-up, the ciphertexts and the pool's signatures cost the same at any request
      // count, so they cancel out; smaller, they cost less time under valgrind.
      config.server = { ...config.server, headersTimeoutMs: 120_000, requestTimeoutMs: 300_000, warmUpRequests: 0 };
    }
    const file = join(dir, 'stages.yaml');
    writeFileSync(file, stringify(config), { mode: 0o600 });
    // As in production (src/log.ts): info level, buffered writes, here to a file instead of stdout.
    const logDest = pino.destination({ dest: openSync(join(dir, 'proxy.log'), 'a'), sync: false, minLength: 4096 });
    const logger = createLogger('info', logDest);
    app = await ProxyApp.start({ runtime: loadConfigFile(file), logger });
    const primary = JSON.parse(readFileSync(join(dir, 'secrets', 'primary.json'), 'utf8')) as {
      XksProxyUriPath: string;
      XksProxyAuthenticationCredential: { AccessKeyId: string; RawSecretAccessKey: string };
    };
    const cred: Credential = { accessKeyId: primary.XksProxyAuthenticationCredential.AccessKeyId, secretAccessKey: primary.XksProxyAuthenticationCredential.RawSecretAccessKey };
    const endpoint = localEndpoint(app.port);
    const counting = opt.only !== 'all';
    const sealed = await makeCiphertexts(endpoint, primary.XksProxyUriPath, cred, counting ? 32 : 128);
    const pool = new SignedPool(endpoint, cred, opt.mix, counting ? 500 : 2000, primary.XksProxyUriPath, sealed);
    const reqs = requestsOf(pool);
    const wires = reqs.map((r) => r.wire);
    const proxyServer = app.xksServer;
    const bare = http.createServer(baselineHandler);
    const floor = http.createServer(floorHandler(app.runtime, app));

    if (opt.only !== 'all') {
      // Warm-up, then the counted requests: callgrind's total over two counts gives instructions per request.
      const server = opt.only === 'e2e' ? proxyServer : opt.only === 'floor' ? floor : bare;
      await drive(server, wires, 2000, opt.connections);
      const r = await drive(server, wires, opt.requests, opt.connections);
      console.log(JSON.stringify(r));
      return;
    }

    const runtime = app.runtime;
    const keyStore = [...runtime.keyStores.values()][0]!;
    const limits = runtime.config.limits;
    const audit = AuditLog.open(join(dir, 'stage-audit.log'));
    const stageLog = createLogger('info', pino.destination({ dest: openSync(join(dir, 'stage.log'), 'a'), sync: false, minLength: 4096 }));
    const n = opt.requests;
    const ctx: StageContext = { keyStore, limits, engine: app.engine, health: app.health };
    const stages: Stages[] = [];
    for (const r of reqs) stages.push(await stagesOf(r, ctx));
    const at = (i: number): Stages => stages[i % stages.length] as Stages;
    const summaries = reqs.map((r, i) => summaryOf(r, at(i), keyStore.name));
    const metrics = app.metrics;
    const stageFns: [string, (i: number) => unknown][] = [
      ['node:http parse + answer (bare handler)', () => undefined],
      ['SigV4 (header check + body hash + signature)', (i) => at(i).sigv4()],
      ['JSON (parse, duplicate keys, fields, Base64)', (i) => at(i).parse()],
      ['policy (key, group rules, state, usage)', (i) => at(i).authorize()],
      ['HSM call (the engine, SoftHSM2 inline)', (i) => at(i).hsm()],
      ['answer (Base64 + JSON.stringify)', (i) => at(i).answer()],
      ['request log line (pino)', (i) => stageLog.info({ ...summaries[i % summaries.length], delivered: true }, 'xks request')],
      ['metrics (request counter + histogram)', (i) => metrics.observeRequest(keyStore.name, at(i).operation, undefined, false, 0.001)],
      [AUDIT_STAGE, (i) => audit.append({ event: 'key-operation', ...summaries[i % summaries.length], delivered: undefined })],
    ];

    const rounds: Record<string, number[]> = {};
    const record = (k: string, v: number): void => void (rounds[k] ??= []).push(v);
    let statuses: Record<number, number> = {};
    let writes = { proxy: 0, bare: 0 };
    // Warm-up: compile everything once.
    await drive(proxyServer, wires, 2000, opt.connections);
    await drive(bare, wires, 2000, opt.connections);
    await drive(floor, wires, 2000, opt.connections);
    for (let round = 0; round < opt.rounds; round++) {
      let before = process.cpuUsage();
      const pr = await drive(proxyServer, wires, n, opt.connections);
      let d = process.cpuUsage(before);
      record('whole request through the proxy handler', (d.user + d.system) / n);
      statuses = pr.statuses;
      before = process.cpuUsage();
      const br = await drive(bare, wires, n, opt.connections);
      d = process.cpuUsage(before);
      record('node:http parse + answer (bare handler)', (d.user + d.system) / n);
      before = process.cpuUsage();
      await drive(floor, wires, n, opt.connections);
      d = process.cpuUsage(before);
      record(FLOOR, (d.user + d.system) / n);
      writes = { proxy: pr.writesPerRequest, bare: br.writesPerRequest };
      for (const [name, fn] of stageFns.slice(1)) record(name, await cpuUs(n, fn));
    }
    audit.close();
    const med = Object.fromEntries(Object.entries(rounds).map(([k, v]) => [k, median(v)]));
    const whole = med['whole request through the proxy handler'] as number;
    // Without --audit the whole request writes no audit line: its price is listed, not subtracted.
    const inWhole = (name: string): boolean => opt.audit || name !== AUDIT_STAGE;
    const listed = stageFns.reduce((s, [name]) => s + (inWhole(name) ? (med[name] as number) : 0), 0);
    const rows: [string, number][] = [...stageFns.map(([name]) => [name, med[name] as number] as [string, number]), ['unaccounted (promises, timers, listeners, plumbing)', whole - listed], ['whole request through the proxy handler', whole]];
    console.log(`\nCPU per request, median of ${opt.rounds} rounds of ${n} requests (${opt.mix} mix, ${opt.connections} connection(s), in process, no network)\n`);
    console.log('| stage | us/request | share of whole |');
    console.log('|---|---|---|');
    for (const [name, us] of rows) console.log(`| ${name}${inWhole(name) ? '' : ' (not in the whole request: --audit)'} | ${us.toFixed(1)} | ${((100 * us) / whole).toFixed(0)}% |`);
    const bareUs = med['node:http parse + answer (bare handler)'] as number;
    const floorUs = med[FLOOR] as number;
    console.log(`| ${FLOOR} (not a stage: bench/lib/floor.ts) | ${floorUs.toFixed(1)} | ${((100 * floorUs) / whole).toFixed(0)}% |`);
    console.log(`\nproxy / node:http: x${(whole / bareUs).toFixed(2)}, floor / node:http: x${(floorUs / bareUs).toFixed(2)} (user space only: the kernel's share of a real socket is not here)`);
    console.log(`writes per answer: proxy ${writes.proxy.toFixed(2)}, bare ${writes.bare.toFixed(2)}; statuses ${JSON.stringify(statuses)}`);
    console.log(`rounds (us/request): ${JSON.stringify(Object.fromEntries(Object.entries(rounds).map(([k, v]) => [k, v.map((x) => Math.round(x * 10) / 10)])))}`);
    if (opt.json) writeFileSync(opt.json, JSON.stringify({ options: opt, median: med, rounds, writes, statuses }, null, 2));
  } finally {
    await app?.stop(1000);
    rmSync(dir, { recursive: true, force: true });
  }
}

void main().catch((e) => {
  console.error(e instanceof Error ? e.stack : String(e));
  process.exit(1);
});
