/**
 * Hot-path benchmark: the XKS proxy on a fresh SoftHSM2 demo token against a bare node:http
 * baseline, under the same autocannon load, so that results read as ratios.
 *
 *   npm run build && npm run bench -- --mode both          (about 2.5 minutes)
 *
 * Signing: every request is SigV4-signed (kms-xks-proxy, us-east-1) ahead of time. A pool of
 * --pool distinct requests (distinct kmsRequestIds, data keys, AADs; decrypts replay real
 * ciphertexts made at setup) in the proportions of --mix is signed before the runs, and each entry
 * is re-signed lazily once its signature is 30-60 s old (spread, so it trickles at pool/60
 * signatures/s), well inside the proxy's 5-minute window. autocannon's setupRequest hands out the
 * entries round-robin: the load generator never signs on the request path in bulk.
 * The baseline receives the very same bytes.
 *
 * Modes:
 *  fixed  for each --rates value, proxy then baseline at that offered rate for --duration s with
 *         --connections keep-alive connections, requests paced evenly (see bench/lib/load.ts).
 *  max    no rate cap; connections ramp through --steps (1,2,4,...,64) for --step-duration s each,
 *         until throughput stops growing (<5% over the best step) or p99 exceeds --knee x the
 *         first step's p99; max req/s of proxy / baseline is the headline ratio.
 *
 * Writes <out>/<timestamp>.json and <timestamp>.svg and prints tables. Only 127.0.0.1 is targeted.
 * Every child (proxy with its workers, baseline) is stopped on exit, error or SIGINT.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { parse, stringify } from 'yaml';
import { runLoad, RunStats, Pacing } from './lib/load';
import { freePortPair, httpStatus, installCleanup, startChild, stopAll, waitFor } from './lib/processes';
import { chart, FixedPoint, fixedTable, MaxResult, maxTable } from './lib/report';
import { Credential, makeCiphertexts, MIXES, Mix, post, SignedPool } from './lib/workload';

const USAGE = `usage: npm run bench -- [options]     (after npm run build)

  --mode fixed|max|both      what to run (default both)
  --rates 1800,3600,5400     offered rates for fixed mode, req/s
  --duration 10              seconds per fixed-rate run
  --connections 100          keep-alive connections in fixed mode
  --pacing smooth|burst      fixed-rate pacing: evenly spaced (default) or autocannon's overallRate
  --steps 1,2,4,8,16,32,64   connection steps for max mode
  --step-duration 5          seconds per max-mode step
  --knee 3                   max mode stops once p99 > knee x first step's p99 (0: never)
  --workers 1|2|auto         proxy server.workers; the baseline runs as many processes (default auto)
  --mix realistic|encrypt|decrypt|metadata|health   proxy workload (default realistic)
  --pool 2000                distinct pre-signed requests
  --warmup 3                 seconds of unrecorded load per target before measuring
  --ramp 2                   leading seconds of every run left out of latency and req/s (connection setup)
  --log-level info           proxy XKS_LOG_LEVEL (its log goes to a file in the temp dir)
  --audit                    enable the proxy's hash-chained audit log (audit.file)
  --set hsm.asyncCalls=true  override one proxy config value (YAML value; repeatable; default
                             hsm.asyncCalls=false, the setting for an in-process HSM)
  --no-baseline              measure the proxy only
  --cpu-prof                 run the proxy under node --cpu-prof; profiles land in <out>/<timestamp>-prof/
  --node-args "ARGS"         extra node options for the proxy, e.g. "--perf-basic-prof" for perf record
  --out bench/results        where results go
  --keep                     keep the temporary token directory`;

/** A bad command line: reported without a stack trace. */
class UsageError extends Error {}

interface Options {
  mode: 'fixed' | 'max' | 'both';
  rates: number[];
  duration: number;
  connections: number;
  pacing: Pacing;
  steps: number[];
  stepDuration: number;
  knee: number;
  workers: string;
  mix: Mix;
  pool: number;
  warmup: number;
  ramp: number;
  logLevel: string;
  audit: boolean;
  /** [dotted config path, YAML value] pairs applied to the proxy config. */
  sets: [string, unknown][];
  baseline: boolean;
  cpuProf: boolean;
  nodeArgs: string[];
  out: string;
  keep: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    mode: 'both', rates: [1800, 3600, 5400], duration: 10, connections: 100, pacing: 'smooth', steps: [1, 2, 4, 8, 16, 32, 64],
    stepDuration: 5, knee: 3, workers: 'auto', mix: 'realistic', pool: 2000, warmup: 3, ramp: 2, logLevel: 'info', audit: false,
    // The configuration README recommends for an in-process HSM such as SoftHSM2 (see bench/README.md).
    sets: [['hsm.asyncCalls', false]],
    baseline: true, cpuProf: false, nodeArgs: [], out: 'bench/results', keep: false,
  };
  const nums = (v: string, what: string): number[] => {
    const list = v.split(',').map(Number);
    if (list.length === 0 || list.some((n) => !Number.isFinite(n) || n <= 0)) throw new UsageError(`--${what}: expected positive numbers, got "${v}"`);
    return list;
  };
  const num = (v: string, what: string, min = 0): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new UsageError(`--${what}: expected a number >= ${min}, got "${v}"`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i] as string;
    const [name, inline] = flag.startsWith('--') ? (flag.slice(2).split(/=(.*)/s) as [string, string | undefined]) : [flag, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new UsageError(`--${name} needs a value`);
      return v;
    };
    switch (name) {
      case 'mode': {
        const v = value();
        if (v !== 'fixed' && v !== 'max' && v !== 'both') throw new UsageError(`--mode: fixed, max or both`);
        o.mode = v;
        break;
      }
      case 'rates': o.rates = nums(value(), name); break;
      case 'duration': o.duration = num(value(), name, 1); break;
      case 'connections': o.connections = Math.round(num(value(), name, 1)); break;
      case 'pacing': {
        const v = value();
        if (v !== 'smooth' && v !== 'burst') throw new UsageError('--pacing: smooth or burst');
        o.pacing = v;
        break;
      }
      case 'steps': o.steps = nums(value(), name).map(Math.round); break;
      case 'step-duration': o.stepDuration = num(value(), name, 1); break;
      case 'knee': o.knee = num(value(), name); break;
      case 'workers': {
        const v = value();
        if (v !== 'auto' && !/^[1-9]\d*$/.test(v)) throw new UsageError('--workers: a positive integer or auto');
        o.workers = v;
        break;
      }
      case 'mix': {
        const v = value();
        if (!(v in MIXES)) throw new UsageError(`--mix: one of ${Object.keys(MIXES).join(', ')}`);
        o.mix = v as Mix;
        break;
      }
      case 'pool': o.pool = Math.round(num(value(), name, 10)); break;
      case 'warmup': o.warmup = num(value(), name); break;
      case 'ramp': o.ramp = num(value(), name); break;
      case 'log-level': o.logLevel = value(); break;
      case 'audit': o.audit = true; break;
      case 'set': {
        const m = /^([A-Za-z][\w.]*)=(.*)$/s.exec(value());
        if (!m) throw new UsageError('--set: section.key=value, e.g. hsm.asyncCalls=false');
        o.sets.push([m[1] as string, parse(m[2] as string)]);
        break;
      }
      case 'no-baseline': o.baseline = false; break;
      case 'cpu-prof': o.cpuProf = true; break;
      case 'node-args': o.nodeArgs = value().split(/\s+/).filter(Boolean); break;
      case 'out': o.out = value(); break;
      case 'keep': o.keep = true; break;
      case 'help':
      case 'h':
        console.log(USAGE);
        process.exit(0);
        break;
      default:
        throw new UsageError(`unknown option ${flag}\n\n${USAGE}`);
    }
  }
  return o;
}

// dist/bench/run.js when compiled; bench/run.ts if run from source.
const root = existsSync(join(__dirname, '..', 'package.json')) ? join(__dirname, '..') : join(__dirname, '..', '..');
const note = (msg: string): void => void process.stderr.write(`bench: ${msg}\n`);

function gitDescribe(): string | undefined {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return dirty ? `${head}+dirty` : head;
  } catch {
    return undefined;
  }
}

function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Counts warn/error/fatal lines of the proxy's pino log (it also holds one info line per request). */
function logSummary(file: string): { bytes: number; warnings: number; errors: number; first?: string } {
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch {
    return { bytes: 0, warnings: 0, errors: 0 };
  }
  const count = (needle: string): number => {
    let n = 0;
    for (let i = buf.indexOf(needle); i >= 0; i = buf.indexOf(needle, i + 1)) n++;
    return n;
  };
  const firstAt = Math.min(...['"level":40', '"level":50', '"level":60'].map((n) => buf.indexOf(n)).filter((i) => i >= 0));
  let first: string | undefined;
  if (Number.isFinite(firstAt)) {
    const start = buf.lastIndexOf(10, firstAt) + 1;
    const end = buf.indexOf(10, firstAt);
    first = buf.subarray(start, end < 0 ? buf.length : end).toString('utf8').slice(0, 400);
  }
  return { bytes: buf.length, warnings: count('"level":40'), errors: count('"level":50') + count('"level":60'), first };
}

const brief = (s: RunStats): string =>
  `${s.rps} req/s, p50 ${s.latencyMs.p50} ms, p99 ${s.latencyMs.p99} ms, max ${s.latencyMs.max} ms, non2xx ${s.non2xx}, errors ${s.errors}, late ${s.late}, ` +
  `CPU server ${s.cpu.serverPct}% loadgen ${s.cpu.loadgenPct}% other ${s.cpu.otherPct}% psi ${s.cpu.pressurePct}%` +
  (s.server ? `; proxy-side p99 <= ${s.server.p99AtMostMs} ms, longest event-loop stall ${s.server.stallMaxMs} ms` : '');

async function main(): Promise<void> {
  const opt = parseArgs(process.argv.slice(2));
  const mainJs = join(root, 'dist', 'src', 'main.js');
  const baselineJs = join(root, 'dist', 'bench', 'baseline-server.js');
  if (!existsSync(mainJs) || !existsSync(baselineJs)) throw new Error('run "npm run build" first');
  const workers = opt.workers === 'auto' ? Math.max(1, os.availableParallelism()) : Number(opt.workers);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const outDir = resolve(process.cwd(), opt.out);
  mkdirSync(outDir, { recursive: true });

  const dir = mkdtempSync(join(os.tmpdir(), 'xks-bench-'));
  const cleanup = async (): Promise<void> => {
    await stopAll(opt.cpuProf ? 20_000 : 5_000);
    if (!opt.keep) rmSync(dir, { recursive: true, force: true });
  };
  installCleanup(cleanup);
  try {
    // ---- demo token and config: setup-token's output with server.* overridden
    const port = await freePortPair();
    note(`setting up a SoftHSM2 token in ${dir}`);
    execFileSync('bash', [join(root, 'softhsm', 'setup-token.sh'), dir, String(port)], { stdio: ['ignore', 'ignore', 'inherit'] });
    const config = parse(readFileSync(join(dir, 'config.yaml'), 'utf8')) as Record<string, Record<string, unknown>>;
    config.server = { ...config.server, host: '127.0.0.1', port, workers: opt.workers === 'auto' ? 'auto' : workers };
    if (opt.audit) config.audit = { ...(config.audit ?? {}), file: join(dir, 'audit.log') };
    for (const [path, v] of opt.sets) {
      const parts = path.split('.');
      let node = config as Record<string, unknown>;
      for (const part of parts.slice(0, -1)) node = (node[part] ??= {}) as Record<string, unknown>;
      node[parts[parts.length - 1] as string] = v;
    }
    const configFile = join(dir, 'bench-config.yaml');
    writeFileSync(configFile, stringify(config), { mode: 0o600 });
    const opsPort = Number((config.ops as { port?: number } | undefined)?.port ?? port + 1);
    const primary = JSON.parse(readFileSync(join(dir, 'secrets', 'primary.json'), 'utf8')) as {
      XksProxyUriPath: string;
      XksProxyAuthenticationCredential: { AccessKeyId: string; RawSecretAccessKey: string };
    };
    const cred: Credential = { accessKeyId: primary.XksProxyAuthenticationCredential.AccessKeyId, secretAccessKey: primary.XksProxyAuthenticationCredential.RawSecretAccessKey };
    const basePath = primary.XksProxyUriPath;

    // ---- proxy
    const logFile = join(dir, 'proxy.log');
    const profDir = join(outDir, `${stamp}-prof`);
    const nodeArgs = [...opt.nodeArgs, ...(opt.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [])];
    const logFd = openSync(logFile, 'a');
    const proxy = startChild([...nodeArgs, mainJs, '--config', configFile], { stdout: logFd, env: { ...process.env, XKS_LOG_LEVEL: opt.logLevel } });
    closeSync(logFd); // the child has its own copy
    try {
      await waitFor('proxy', proxy, async () => (await httpStatus(opsPort, '/readyz')) === 200);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n--- ${logFile}\n${tail(logFile)}`);
    }
    note(`proxy ready on 127.0.0.1:${port} (ops ${opsPort}), workers ${workers}, pid ${proxy.pid}`);

    // ---- baseline
    let baselinePort = 0;
    let baselinePid = 0;
    if (opt.baseline) {
      baselinePort = await freePortPair();
      const b = startChild([baselineJs, '--port', String(baselinePort), '--workers', String(workers)], { stdout: 'inherit' });
      await waitFor('baseline', b, async () => (await httpStatus(baselinePort, '/', 'POST')) === 200);
      baselinePid = b.pid as number;
      note(`baseline ready on 127.0.0.1:${baselinePort} (${workers} process${workers > 1 ? 'es' : ''})`);
    }

    // ---- workload: real ciphertexts, signed pool, one request of each kind must succeed
    const sealed = await makeCiphertexts(port, basePath, cred, 128);
    const pool = new SignedPool(`127.0.0.1:${port}`, cred, opt.mix, opt.pool, basePath, sealed);
    for (const s of pool.samples()) {
      const r = await post(port, s.path, s.body, cred);
      if (r.status !== 200) throw new Error(`pre-check ${s.op} ${s.path}: HTTP ${r.status} ${JSON.stringify(r.json)}`);
    }
    note(`pool: ${pool.size} signed requests ${JSON.stringify(pool.counts)}; every operation answered 200`);

    const targets: { label: string; port: number; pid: number; metricsPort?: number }[] = [{ label: 'proxy', port, pid: proxy.pid as number, metricsPort: opsPort }];
    if (opt.baseline) targets.push({ label: 'baseline', port: baselinePort, pid: baselinePid });
    if (opt.warmup > 0) {
      for (const t of targets) {
        await runLoad({ label: t.label, port: t.port, connections: 16, durationS: opt.warmup, pacing: opt.pacing, pool, serverPid: t.pid });
      }
      note(`warmed up (${opt.warmup} s per target)`);
    }
    const pause = (): Promise<void> => new Promise((r) => setTimeout(r, 500));

    // ---- fixed rate
    const fixed: FixedPoint[] = [];
    if (opt.mode !== 'max') {
      for (const rate of opt.rates) {
        const point: Partial<FixedPoint> = { rate };
        for (const t of targets) {
          const s = await runLoad({ label: t.label, port: t.port, connections: opt.connections, durationS: opt.duration, rate, pacing: opt.pacing, pool, serverPid: t.pid, metricsPort: t.metricsPort, rampS: opt.ramp });
          point[t.label as 'proxy' | 'baseline'] = s;
          note(`fixed ${rate} req/s ${t.label}: ${brief(s)}`);
          await pause();
        }
        fixed.push(point as FixedPoint);
      }
    }

    // ---- max throughput
    let max: MaxResult | undefined;
    if (opt.mode !== 'fixed') {
      const ramps: Record<string, RunStats[]> = { proxy: [], baseline: [] };
      for (const t of targets) {
        let best = 0;
        for (const connections of opt.steps) {
          const s = await runLoad({ label: t.label, port: t.port, connections, durationS: opt.stepDuration, pacing: opt.pacing, pool, serverPid: t.pid, metricsPort: t.metricsPort, rampS: opt.ramp });
          const steps = ramps[t.label] as RunStats[];
          steps.push(s);
          note(`max ${t.label} ${connections} conns: ${brief(s)}`);
          await pause();
          const first = steps[0] as RunStats;
          const flat = steps.length > 1 && s.rps < best * 1.05;
          const bent = opt.knee > 0 && steps.length > 1 && s.latencyMs.p99 > opt.knee * first.latencyMs.p99;
          best = Math.max(best, s.rps);
          if (flat || bent) {
            note(`max ${t.label}: stopping (${flat ? 'throughput stopped growing' : ''}${flat && bent ? ', ' : ''}${bent ? `p99 > ${opt.knee}x the first step's` : ''})`);
            break;
          }
        }
      }
      const top = (list: RunStats[]): RunStats | undefined => list.reduce<RunStats | undefined>((a, b) => (!a || b.rps > a.rps ? b : a), undefined);
      const p = top(ramps.proxy as RunStats[]);
      const b = top(ramps.baseline as RunStats[]);
      max = {
        proxy: ramps.proxy as RunStats[],
        baseline: ramps.baseline as RunStats[],
        proxyMaxRps: p?.rps ?? 0,
        proxyMaxAt: p?.connections ?? 0,
        baselineMaxRps: b?.rps ?? 0,
        baselineMaxAt: b?.connections ?? 0,
        ratio: p && b && b.rps > 0 ? Math.round((p.rps / b.rps) * 1000) / 1000 : null,
      };
    }

    // ---- stop the proxy first so that --cpu-prof profiles are written, then report
    await stopAll(opt.cpuProf ? 20_000 : 5_000);
    const proxyLog = logSummary(logFile);

    const result = {
      timestamp: new Date().toISOString(),
      git: gitDescribe(),
      machine: { node: process.version, cpus: os.availableParallelism(), cpuModel: os.cpus()[0]?.model, loadavg: os.loadavg().map((v) => Math.round(v * 100) / 100) },
      options: opt,
      proxy: {
        workers,
        logLevel: opt.logLevel,
        audit: opt.audit,
        hsm: { sessionPoolSize: (config.hsm as Record<string, unknown>)?.sessionPoolSize, asyncCalls: (config.hsm as Record<string, unknown>)?.asyncCalls ?? 'default' },
        limits: config.limits ?? 'defaults',
        log: proxyLog,
      },
      baselineProcesses: opt.baseline ? workers : 0,
      pool: { size: pool.size, counts: pool.counts, signatures: pool.signatures },
      fixed,
      max,
    };
    const jsonFile = join(outDir, `${stamp}.json`);
    const svgFile = join(outDir, `${stamp}.svg`);
    writeFileSync(jsonFile, JSON.stringify(result, null, 2) + '\n');
    writeFileSync(svgFile, chart(`xks-proxy vs bare node:http — workers ${workers}, mix ${opt.mix}, ${opt.pacing} pacing, ${result.git ?? ''} ${result.timestamp.slice(0, 16)}`, fixed, max));

    const out: string[] = [''];
    if (fixed.length) {
      out.push(`FIXED RATE  proxy mix ${opt.mix}, workers ${workers}, ${opt.connections} connections, ${opt.duration} s per run (first ${Math.min(opt.ramp, opt.duration / 2)} s not measured), ${opt.pacing} pacing; latency in ms`);
      out.push(fixedTable(fixed), '');
    }
    if (max) {
      out.push(`MAX THROUGHPUT  no rate cap, ${opt.stepDuration} s per step (first ${Math.min(opt.ramp, opt.stepDuration / 2)} s not measured); latency in ms`);
      out.push(maxTable(max), '');
    }
    const all = [...fixed.flatMap((f) => [f.proxy, f.baseline]), ...(max ? [...max.proxy, ...max.baseline] : [])].filter((s): s is RunStats => s !== undefined);
    const busiest = Math.max(0, ...all.map((s) => s.cpu.otherPct));
    if (busiest > 20) {
      out.push(`warning: other processes used up to ${busiest}% of a core during a run; this box is shared and the numbers are skewed (rerun when it is quiet)`);
    }
    const lateRuns = fixed.flatMap((f) => [f.proxy, f.baseline]).filter((s): s is RunStats => s !== undefined && s.late > s.requests * 0.001);
    if (lateRuns.length) {
      out.push(`note: ${lateRuns.map((s) => `${s.label}@${s.offeredRate}`).join(', ')} fell behind the schedule (late > 0.1%): the target is saturated or --connections is too low; latency is understated there`);
    }
    out.push(`wrote ${jsonFile}`, `wrote ${svgFile}`);
    if (opt.cpuProf && existsSync(profDir)) out.push(`profiles: ${readdirSync(profDir).map((f) => join(profDir, f)).join(' ')}  (node dist/bench/profile-summary.js FILE)`);
    if (proxyLog.errors + proxyLog.warnings > 0) {
      out.push(`warning: the proxy logged ${proxyLog.errors} error and ${proxyLog.warnings} warning lines, first: ${proxyLog.first ?? ''}${opt.keep ? ` (${logFile})` : ' (--keep keeps the log)'}`);
    }
    console.log(out.join('\n'));
  } finally {
    await cleanup();
  }
}

main().catch((e) => {
  console.error(`bench: ${e instanceof UsageError ? e.message : ((e as Error).stack ?? e)}`);
  process.exitCode = 1;
  void stopAll(2000);
});
