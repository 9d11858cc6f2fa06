/**
 * Cold start: the first seconds of a fresh proxy hit by full traffic the moment it turns ready, as a
 * replica that just passed its readiness probe behind a load balancer is (issue 11).
 *
 *   npm run build:bench && node dist-bench/bench/cold-start.js [--trials 5] [--rate 1800] [--connections 200] [--seconds 3]
 *     [--workers 1] [--log-level info] [--set server.warmUpRequests=0] [--root DIR] [--out bench/results]
 *
 * Sets up one SoftHSM2 demo token (softhsm/setup-token.sh), makes real ciphertexts through a throwaway
 * proxy (so that no trial's proxy has served a request before its burst), then per trial: starts a NEW
 * proxy process (dist/src/main.js of --root) on that token, polls /readyz on the ops port every 10 ms, and
 * the moment it answers 200 offers --rate req/s of the realistic mix open loop (smooth pacing) over
 * --connections keep-alive connections opened all at once, for --seconds s plus one more second whose
 * requests are not reported (they give the reported ones time to be answered), then stops the proxy.
 *
 * Answers are bucketed by when their request was SENT, per 100 ms from the start of the burst, summed over
 * trials. Prints a table (100 ms rows for the first 2 s, then 1 s rows), one summary line per trial
 * (spawn to ready; "settled after": start of the first bucket from which every bucket is settled, i.e.
 * answers >= half the requests offered in it and >= 95% of them 200 within 250 ms; 429s and 503s of the
 * first second; p99 of the first second's 200s) and writes <out>/<timestamp>-cold-start.json.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { join, resolve } from 'node:path';
import { parse, stringify } from 'yaml';
import { KMS_TIMEOUT_MS, runLoad, RunStats } from './lib/load';
import { httpStatus, installCleanup, startChild, stopAll, stopChild } from './lib/processes';
import { freePortPair } from '../testbed/ports';
import { ROOT } from './lib/paths';
import { gitDescribe, logTail } from './lib/run-info';
import { localEndpoint, makeCiphertexts, parseCredentialJson, post, Sealed, SignedPool } from './lib/workload';

interface Options {
  root: string;
  trials: number;
  rate: number;
  connections: number;
  seconds: number;
  workers: number | 'auto';
  logLevel: string;
  out: string;
  pool: number;
  sets: [string, unknown][];
}

function parseArgs(argv: string[]): Options {
  const o: Options = { root: ROOT, trials: 5, rate: 1800, connections: 200, seconds: 3, workers: 1, logLevel: 'info', out: 'bench/results', pool: 2000, sets: [] };
  const num = (name: string, s: string, min: number): number => {
    const n = Number(s);
    if (!Number.isFinite(n) || n < min) throw new Error(`${name}: expected a number >= ${min}, got "${s}"`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const v = (): string => argv[++i] ?? '';
    if (a === '--root') o.root = resolve(v());
    else if (a === '--trials') o.trials = Math.round(num(a, v(), 1));
    else if (a === '--rate') o.rate = num(a, v(), 1);
    else if (a === '--connections') o.connections = Math.round(num(a, v(), 1));
    else if (a === '--seconds') o.seconds = Math.round(num(a, v(), 1));
    else if (a === '--workers') {
      const w = v();
      o.workers = w === 'auto' ? 'auto' : Math.round(num(a, w, 1));
    } else if (a === '--log-level') o.logLevel = v();
    else if (a === '--out') o.out = v();
    else if (a === '--pool') o.pool = Math.round(num(a, v(), 10));
    else if (a === '--set') {
      const [path, value] = v().split(/=(.*)/s) as [string, string];
      o.sets.push([path, parse(value)]);
    } else throw new Error(`unknown option ${a} (see the comment at the top of bench/cold-start.ts)`);
  }
  return o;
}

const note = (s: string): void => void process.stderr.write(`cold-start: ${s}\n`);

const BUCKET_MS = 100;
/** A bucket is settled when this share of its answers were 200 within KMS's deadline... */
const SETTLED_OK_SHARE = 0.95;
/**
 * ...and at least this share of the requests offered in it were sent and answered: a proxy that stalls
 * holds the connections, so the schedule slips and a stalled bucket would otherwise look empty, not bad.
 * Not tighter: smooth pacing gives each connection a fixed phase, so a 100 ms bucket holds 20% more or
 * less than its share (each connection fires in it or not), at low connection counts more.
 */
const SETTLED_SENT_SHARE = 0.5;
/** Load keeps coming after the reported window (it would behind a load balancer) and lets its last requests be answered. */
const TAIL_S = 1;

/** Answers to the requests sent in one bucket. */
interface Bucket {
  answers: number;
  okWithin: number;
  s429: number;
  s503: number;
  other: number;
  /** Latencies (ms) of the 200 answers. */
  ok: number[];
}

const emptyBucket = (): Bucket => ({ answers: 0, okWithin: 0, s429: 0, s503: 0, other: 0, ok: [] });

function add(into: Bucket, b: Bucket): void {
  into.answers += b.answers;
  into.okWithin += b.okWithin;
  into.s429 += b.s429;
  into.s503 += b.s503;
  into.other += b.other;
  for (const l of b.ok) into.ok.push(l);
}

function merge(list: Bucket[]): Bucket {
  const m = emptyBucket();
  for (const b of list) add(m, b);
  return m;
}

function p99(values: number[]): number | null {
  if (values.length === 0) return null;
  const a = Float64Array.from(values).sort();
  return Math.round((a[Math.min(a.length - 1, Math.ceil(0.99 * a.length) - 1)] as number) * 100) / 100;
}

const share = (n: number, of: number): number => (of > 0 ? Math.round((n / of) * 10000) / 10000 : 0);

function bucketView(b: Bucket, fromMs: number, toMs: number): Record<string, number | null> {
  return { fromMs, toMs, answers: b.answers, okWithin250: b.okWithin, okShare: share(b.okWithin, b.answers), s429: b.s429, s503: b.s503, other: b.other, okP99Ms: p99(b.ok) };
}

interface Trial {
  trial: number;
  spawnToReadyMs: number;
  buckets: Bucket[];
  /** Start (ms from the burst) of the first bucket from which all reported buckets are settled; null if none. */
  settledAfterMs: number | null;
  firstSecond: { s429: number; s503: number; okP99Ms: number | null; answers: number; okShare: number };
  /** The proxy's xks_shed_total by reason over the whole trial: which queue refused (event loop or HSM sessions). */
  shed: Record<string, number>;
  run: RunStats;
  proxyDied: string | null;
}

function settledAfter(buckets: Bucket[], offeredPerBucket: number): number | null {
  let from: number | null = null;
  buckets.forEach((b, i) => {
    const settled = b.answers >= SETTLED_SENT_SHARE * offeredPerBucket && b.okWithin >= SETTLED_OK_SHARE * b.answers;
    if (!settled) from = null;
    else if (from === null) from = i * BUCKET_MS;
  });
  return from;
}



/** The token's config with this run's ports and overrides. */
function writeConfig(base: Record<string, Record<string, unknown>>, opt: Options, port: number, file: string): void {
  const config = structuredClone(base);
  config.server = { ...config.server, host: '127.0.0.1', port, workers: opt.workers };
  config.ops = { ...config.ops, host: '127.0.0.1', port: port + 1 };
  for (const [path, v] of opt.sets) {
    const parts = path.split('.');
    let node = config as Record<string, unknown>;
    for (const part of parts.slice(0, -1)) node = (node[part] ??= {}) as Record<string, unknown>;
    node[parts[parts.length - 1] as string] = v;
  }
  writeFileSync(file, stringify(config), { mode: 0o600 });
}

/**
 * Setup calls retried while the proxy sheds them (HTTP 429): on a box shared with other work its
 * event-loop guard can refuse even a lone request just after start. Anything else fails at once.
 */
async function throttled<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (e) {
      if (attempt >= 20 || !/HTTP 429/.test((e as Error).message)) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** xks_shed_total summed by reason, from the ops port's /metrics. */
async function shedByReason(opsPort: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  try {
    const text = await (await fetch(`http://127.0.0.1:${opsPort}/metrics`)).text();
    for (const m of text.matchAll(/^xks_shed_total\{[^}]*reason="([^"]+)"[^}]*\} (\d+)/gm)) out[m[1] as string] = (out[m[1] as string] ?? 0) + Number(m[2]);
  } catch {
    /* the proxy is gone: the trial line says so */
  }
  return out;
}

/** Starts a proxy and returns once /readyz answers 200, polling often enough to time readiness to ~10 ms. */
async function startProxy(mainJs: string, configFile: string, opsPort: number, logFile: string, logLevel: string): Promise<{ proxy: ReturnType<typeof startChild>; readyMs: number }> {
  const logFd = openSync(logFile, 'a');
  const spawnedAt = performance.now();
  const proxy = startChild([mainJs, '--config', configFile], { stdout: logFd, env: { ...process.env, XKS_LOG_LEVEL: logLevel } });
  closeSync(logFd);
  const until = spawnedAt + 30_000;
  while (performance.now() < until) {
    if (proxy.exitCode !== null || proxy.signalCode !== null) throw new Error(`proxy exited (code ${proxy.exitCode}, signal ${proxy.signalCode}) before it was ready\n--- ${logFile}\n${logTail(logFile)}`);
    if ((await httpStatus(opsPort, '/readyz')) === 200) return { proxy, readyMs: Math.round(performance.now() - spawnedAt) };
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`proxy not ready after 30 s\n--- ${logFile}\n${logTail(logFile)}`);
}

async function main(): Promise<void> {
  const opt = parseArgs(process.argv.slice(2));
  const mainJs = join(opt.root, 'dist', 'src', 'main.js');
  if (!existsSync(mainJs)) throw new Error(`run "npm run build" in ${opt.root} first`);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const outDir = resolve(process.cwd(), opt.out);
  mkdirSync(outDir, { recursive: true });
  const dir = mkdtempSync(join(os.tmpdir(), 'xks-cold-'));
  const cleanup = async (): Promise<void> => {
    await stopAll(5000);
    rmSync(dir, { recursive: true, force: true });
  };
  installCleanup(cleanup);
  try {
    const setupPort = await freePortPair();
    execFileSync('bash', [join(opt.root, 'softhsm', 'setup-token.sh'), dir, String(setupPort)], { stdio: ['ignore', 'ignore', 'inherit'] });
    const baseConfig = parse(readFileSync(join(dir, 'config.yaml'), 'utf8')) as Record<string, Record<string, unknown>>;
    const { cred, uriPath } = parseCredentialJson(readFileSync(join(dir, 'secrets', 'primary.json'), 'utf8'));
    const basePath = uriPath!;
    const configFile = join(dir, 'cold-config.yaml');

    // ---- ciphertexts from a throwaway proxy: the keys live in the token, so the trials' proxies can
    // decrypt them without having served anything before their burst.
    let sealed: Sealed[];
    {
      const port = await freePortPair();
      writeConfig(baseConfig, opt, port, configFile);
      const { proxy, readyMs } = await startProxy(mainJs, configFile, port + 1, join(dir, 'setup.log'), opt.logLevel);
      const ep = localEndpoint(port);
      sealed = await throttled(() => makeCiphertexts(ep, basePath, cred, 128));
      const pool = new SignedPool(ep, cred, 'realistic', 10, basePath, sealed);
      for (const s of pool.samples()) {
        await throttled(async () => {
          const r = await post(ep, s.path, s.body, cred);
          if (r.status !== 200) throw new Error(`pre-check ${s.op} ${s.path}: HTTP ${r.status} ${JSON.stringify(r.json)}`);
        });
      }
      await stopChild(proxy, 5000);
      note(`setup proxy ready after ${readyMs} ms; ${sealed.length} ciphertexts made, one request of each kind answered 200`);
    }

    const buckets = Math.round((opt.seconds * 1000) / BUCKET_MS);
    const offeredPerBucket = (opt.rate * BUCKET_MS) / 1000;
    const trials: Trial[] = [];
    for (let t = 1; t <= opt.trials; t++) {
      const port = await freePortPair();
      writeConfig(baseConfig, opt, port, configFile);
      const ep = localEndpoint(port);
      // Signed for this trial's port (SigV4 signs the Host header), before the proxy starts.
      const pool = new SignedPool(ep, cred, 'realistic', opt.pool, basePath, sealed);
      const logFile = join(dir, `trial-${t}.log`);
      const { proxy, readyMs } = await startProxy(mainJs, configFile, port + 1, logFile, opt.logLevel);
      let died: string | null = null;
      proxy.once('exit', (code, signal) => (died = `exit ${code ?? ''}${signal ?? ''}`));
      const per: Bucket[] = Array.from({ length: buckets }, emptyBucket);
      const run = await runLoad({
        label: `trial ${t}`,
        endpoint: ep,
        connections: opt.connections,
        durationS: opt.seconds + TAIL_S,
        rate: opt.rate,
        pacing: 'smooth',
        pool,
        serverPid: proxy.pid,
        onResponse: (status, ms, atMs) => {
          const b = per[Math.floor((atMs - ms) / BUCKET_MS)];
          if (!b) return; // sent in the tail second
          b.answers++;
          if (status === 200) {
            b.ok.push(ms);
            if (ms <= KMS_TIMEOUT_MS) b.okWithin++;
          } else if (status === 429) b.s429++;
          else if (status === 503) b.s503++;
          else b.other++;
        },
      });
      const stopping = died === null;
      const shed = stopping ? await shedByReason(port + 1) : {};
      await stopChild(proxy, 5000);
      const first = merge(per.slice(0, 1000 / BUCKET_MS));
      const trial: Trial = {
        trial: t,
        spawnToReadyMs: readyMs,
        buckets: per,
        settledAfterMs: settledAfter(per, offeredPerBucket),
        firstSecond: { s429: first.s429, s503: first.s503, okP99Ms: p99(first.ok), answers: first.answers, okShare: share(first.okWithin, first.answers) },
        shed,
        run,
        proxyDied: stopping ? null : died,
      };
      trials.push(trial);
      note(summaryLine(trial, opt.seconds));
      if (!stopping) note(`--- ${logFile}\n${logTail(logFile)}`);
    }

    // ---- report
    const all = Array.from({ length: buckets }, (_, i) => merge(trials.map((t) => t.buckets[i] as Bucket)));
    const rows: { label: string; b: Bucket; fromMs: number; toMs: number }[] = [];
    const fine = Math.min(buckets, 2000 / BUCKET_MS);
    for (let i = 0; i < fine; i++) rows.push({ label: `${i * BUCKET_MS}`, b: all[i] as Bucket, fromMs: i * BUCKET_MS, toMs: (i + 1) * BUCKET_MS });
    for (let s = 2; s < opt.seconds; s++) rows.push({ label: `${s * 1000}-${(s + 1) * 1000}`, b: merge(all.slice((s * 1000) / BUCKET_MS, ((s + 1) * 1000) / BUCKET_MS)), fromMs: s * 1000, toMs: (s + 1) * 1000 });
    const settled = trials.map((t) => t.settledAfterMs);
    const out: string[] = [
      `COLD START  ${opt.rate} req/s (realistic mix, smooth open loop) over ${opt.connections} new connections from the moment /readyz answered 200, ` +
        `${trials.length} trial${trials.length > 1 ? 's' : ''}, workers ${opt.workers}${opt.sets.length ? `, ${opt.sets.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(' ')}` : ''}`,
      `answers to the requests sent in each window (ms from the burst), summed over trials (offered ${offeredPerBucket * trials.length} per 100 ms); ok<=250: HTTP 200 within 250 ms; ok p99 in ms`,
      table(rows),
      '',
      ...trials.map((t) => summaryLine(t, opt.seconds)),
      `settled after (ms, per trial): ${settled.map((s) => (s === null ? 'never' : s)).join(', ')}; spawn to ready (ms): ${trials.map((t) => t.spawnToReadyMs).join(', ')}`,
    ];
    const jsonFile = join(outDir, `${stamp}-cold-start.json`);
    const result = {
      mode: 'cold-start',
      timestamp: new Date().toISOString(),
      git: gitDescribe(opt.root),
      machine: { node: process.version, cpus: os.availableParallelism(), loadavg: os.loadavg().map((v) => Math.round(v * 100) / 100) },
      options: { ...opt, sets: undefined, overrides: Object.fromEntries(opt.sets), bucketMs: BUCKET_MS, tailS: TAIL_S },
      settledRule: { okShare: SETTLED_OK_SHARE, sentShare: SETTLED_SENT_SHARE, withinMs: KMS_TIMEOUT_MS },
      aggregate: {
        buckets: all.map((b, i) => bucketView(b, i * BUCKET_MS, (i + 1) * BUCKET_MS)),
        rows: rows.map((r) => bucketView(r.b, r.fromMs, r.toMs)),
        settledAfterMs: settled,
        spawnToReadyMs: trials.map((t) => t.spawnToReadyMs),
      },
      trials: trials.map((t) => ({
        trial: t.trial,
        spawnToReadyMs: t.spawnToReadyMs,
        settledAfterMs: t.settledAfterMs,
        firstSecond: t.firstSecond,
        proxyDied: t.proxyDied,
        buckets: t.buckets.map((b, i) => bucketView(b, i * BUCKET_MS, (i + 1) * BUCKET_MS)),
        // The whole run, tail second included (autocannon's totals, CPU, per-second timeline by arrival).
        run: t.run,
      })),
    };
    writeFileSync(jsonFile, JSON.stringify(result, null, 2) + '\n');
    out.push(`wrote ${jsonFile}`);
    console.log(out.join('\n'));
  } finally {
    await cleanup();
  }
}

function summaryLine(t: Trial, seconds: number): string {
  const settled = t.settledAfterMs === null ? `not settled within ${seconds} s` : `settled after ${t.settledAfterMs} ms`;
  const f = t.firstSecond;
  const noans = t.run.errors + t.run.timeouts;
  return (
    `trial ${t.trial}: ready ${t.spawnToReadyMs} ms after spawn; ${settled}; first second: ${f.answers} answers, ${(f.okShare * 100).toFixed(1)}% ok<=250, ` +
    `429 x ${f.s429}, 503 x ${f.s503}, p99 of 200s ${f.okP99Ms ?? '-'} ms; whole run: late ${t.run.late}, no answer ${noans}, proxy CPU ${t.run.cpu.serverPct}%; shed by reason ${JSON.stringify(t.shed)}` +
    (t.proxyDied ? `; PROXY DIED (${t.proxyDied})` : '')
  );
}

function table(rows: { label: string; b: Bucket }[]): string {
  const head = ['from ms', 'answers', 'ok<=250', 'ok %', '429', '503', 'other', 'ok p99'];
  const body = rows.map(({ label, b }) => [label, b.answers, b.okWithin, b.answers ? ((b.okWithin / b.answers) * 100).toFixed(1) : '-', b.s429, b.s503, b.other, p99(b.ok) ?? '-'].map(String));
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] as string).length)));
  return [head, ...body].map((r) => r.map((c, i) => c.padStart(widths[i] as number)).join('  ')).join('\n');
}

void main().catch((e) => {
  process.stderr.write(`cold-start: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
