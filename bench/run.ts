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
 *  overload   the proxy's capacity for the mix (closed-loop ramp over --capacity-steps, or --capacity),
 *         then each of --multiples x capacity offered open loop for --duration s, with --payload small
 *         and/or large encrypts; per step goodput, 429s and their latency, 503s, /readyz, /healthz and
 *         health probes, RSS; a verdict against issue 22's bar (bench/lib/overload.ts).
 *  flood  closed loop: --capacity-connections (200) connections give the capacity, then
 *         --flood-connections (600) each resend the moment they are answered (large payload by default);
 *         the same columns and verdict.
 *  hostile    the mix at the first --rates value alone, then with --hostile-share of that rate in
 *         hostile connections on top (bench/lib/hostile.ts): the valid requests' p99, lost requests,
 *         RSS, log and audit growth. The audit log is on in this mode.
 *
 * Target mode (--target https://host:port/prefix): the same runs against a deployed proxy, with its
 * credential, key ids and CA; no local proxy, no SoftHSM2, no baseline (so no ratios), no server-side
 * CPU or metrics. It encrypts its own data keys first, then runs the modes and the KMS-shaped check:
 * 1800 req/s (KMS's default per key store) for --kms-check-seconds, with p99 and the share of answers
 * within KMS's 250 ms timeout.
 *
 * Writes <out>/<timestamp>.json and <timestamp>.svg and prints tables. Without --target only 127.0.0.1
 * is targeted. Every child (proxy with its workers, baseline) is stopped on exit, error or SIGINT.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { parse, stringify } from 'yaml';
import { KMS_TIMEOUT_MS, runLoad, RunStats, Pacing } from './lib/load';
import { cpuList, httpStatus, installCleanup, ownCpus, pinProcess, startChild, stopAll, threadAffinity, treeAffinity, waitFor } from './lib/processes';
import { freePortPair } from '../testbed/ports';
import { benchJs, productJs, ROOT } from './lib/paths';
import { gitDescribe, logTail } from './lib/run-info';
import { BAR_MULTIPLE, GOODPUT_BAR, verdict } from './lib/overload';
import { chart, FixedPoint, fixedTable, hostileChart, hostileTable, kmsCheckTable, MaxResult, maxTable, overloadChart, overloadTable } from './lib/report';
import { FloodResult, runFlood, runHostile, runOverload, StressOptions, StressTarget } from './lib/stress';
import { makeBenchFleet } from './lib/fleet';
import { createSetup, restartSetup, stopSetup, type HsmSetup } from '../testbed/hsm-setups';
import { checkTarget, kmsCheck, KmsCheck, remoteTarget, TargetError, TargetOptions } from './lib/target';
import { Credential, DEMO_KEYS, Endpoint, Keys, localEndpoint, makeCiphertexts, MIXES, Mix, parseCredentialJson, Payload, post, SignedPool } from './lib/workload';

const USAGE = `usage: npm run bench -- [options]     (builds dist/ and dist-bench/ first)

  --mode fixed|max|both|overload|flood|hostile   what to run (default both; overload, flood and hostile: see below)
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
  --hsms 2                   a fleet of N SoftHSM2 tokens (keys replicated between them) instead of one;
                             --set hsm.X applies to every HSM of the fleet
  --hsm-loss                 with --hsms N >= 3: the last HSM is a SoftHSM2 token behind a p11-kit server,
                             stopped for the middle third of every fixed-rate proxy run (p99 during the
                             loss of one HSM; the others serve)
  --pin                      local proxy: the proxy (and baseline) on the upper half of this process's CPUs, the
                             load generator (this process, all its threads) on the lower half, with taskset;
                             --pin proxy=1,bench=0 chooses the lists (taskset -c syntax); --workers auto then
                             means the proxy's CPUs
  --no-baseline              measure the proxy only
  --floor                    fixed mode: also measure bench/floor-server.ts (the must-haves of a request alone:
                             SigV4, JSON, policy, the HSM call, the answer; no log, metrics, deadline, shedding)
  --cpu-prof                 run the proxy under node --cpu-prof; profiles land in <out>/<timestamp>-prof/
  --node-args "ARGS"         extra node options for the proxy, e.g. "--perf-basic-prof" for perf record
  --out bench/results        where results go
  --keep                     keep the temporary token directory

Overload (--mode overload; --duration is the length of each step, --steps/--step-duration not used):
  --multiples 1,2,3,5        offered load as multiples of the measured capacity
  --payload both             small (32-byte data keys), large (4300-byte plaintext, 8 KiB AAD) or both
  --capacity N               skip the measurement: capacity is N req/s (200s within 250 ms)
  --capacity-steps 8,16,32,64,128   closed-loop connection steps that measure capacity
  --capacity-step-duration 5 seconds per capacity step
  --max-connections 800      most connections of an open-loop step (it uses rate x 300 ms, at least --connections;
                             keep it under the proxy's server.maxConnections, 1024 by default). The steps are
                             sent by the bench's open-loop generator (bench/lib/open-loop.ts, its own thread);
                             over TLS (--target https://...) and with --pacing burst by autocannon
  --generator open-loop      or autocannon: who sends the open-loop steps (autocannon as before, for comparison)

Flood (--mode flood; closed loop, --duration per step, large payload unless --payload says otherwise):
  --capacity-connections 200 connections whose goodput is the capacity
  --flood-connections 600    connections of the flood, each resending the moment it is answered

Hostile (--mode hostile; rate = the first --rates value, --duration per step):
  --hostile-share 0.1        hostile connections per second, as a share of the rate

Against a deployed proxy (no local proxy or SoftHSM2, no baseline):
  --target https://host:port/prefix   the proxy's XKS URI endpoint and path prefix
  --access-key-id ID         SigV4 access key id of the key store
  --secret-file FILE         file holding its secret access key
  --key-id K1[,K2]           external key ids: encrypt/metadata use all, decrypt the first
  --region us-east-1         SigV4 region
  --ca FILE                  CA bundle that issued the proxy's certificate
  --cert FILE --key FILE     client certificate and key (mTLS)
  --kms-check-seconds 60     length of the KMS-shaped check at 1800 req/s (default: --duration when that is
                             given, else 60; 0 skips it)`;

/** A bad command line: reported without a stack trace. */
class UsageError extends Error {}

type Mode = 'fixed' | 'max' | 'both' | 'overload' | 'flood' | 'hostile';
const MODES: readonly Mode[] = ['fixed', 'max', 'both', 'overload', 'flood', 'hostile'];

interface Options {
  mode: Mode;
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
  /** Fixed mode: also the floor server (the must-haves alone). */
  floor: boolean;
  cpuProf: boolean;
  nodeArgs: string[];
  out: string;
  keep: boolean;
  target?: Partial<TargetOptions>;
  kmsCheckSeconds: number;
  multiples: number[];
  payloads: Payload[];
  capacity?: number;
  capacitySteps: number[];
  capacityStepDuration: number;
  maxConnections: number;
  /** Who sends the open-loop steps of --mode overload over plain HTTP. */
  generator: 'open-loop' | 'autocannon';
  /** --mode flood: closed-loop connections of the capacity step and of the flood. */
  capacityConnections: number;
  floodConnections: number;
  hostileShare: number;
  /** HSMs in the proxy's fleet (1: the single hsm section). */
  hsms: number;
  hsmLoss: boolean;
  /** --pin: true for the default split, or the CPU lists given. */
  pin?: true | { proxy: string; bench: string };
}

/** --pin resolved: taskset CPU lists of each side. */
interface Pin {
  proxy: string;
  bench: string;
  proxyCpus: number;
}

const BAR_TEXT = `bar (issue 22): at ${BAR_MULTIPLE}x capacity, >= ${GOODPUT_BAR * 100}% of capacity answered 200 within 250 ms as the client measures it; /readyz and /healthz on the ops port answer 200 throughout (the XKS port's /healthz is reported, and judged only against --target, which has no ops port to ask)`;

/** KMS's default request quota per external key store. */
const KMS_RATE = 1800;

function parseArgs(argv: string[]): Options {
  const o: Options = {
    mode: 'both', rates: [1800, 3600, 5400], duration: 10, connections: 100, pacing: 'smooth', steps: [1, 2, 4, 8, 16, 32, 64],
    stepDuration: 5, knee: 3, workers: 'auto', mix: 'realistic', pool: 2000, warmup: 3, ramp: 2, logLevel: 'info', audit: false,
    // The configuration README recommends for an in-process HSM such as SoftHSM2 (see bench/README.md).
    sets: [['hsm.asyncCalls', false]],
    baseline: true, floor: false, cpuProf: false, nodeArgs: [], out: 'bench/results', keep: false, kmsCheckSeconds: 60,
    multiples: [1, 2, 3, 5], payloads: ['small', 'large'], capacitySteps: [8, 16, 32, 64, 128], capacityStepDuration: 5, maxConnections: 800, generator: 'open-loop', capacityConnections: 200, floodConnections: 600, hostileShare: 0.1, hsms: 1, hsmLoss: false,
  };
  let payloadGiven = false;
  const target = (): Partial<TargetOptions> => (o.target ??= { region: 'us-east-1' });
  let durationGiven = false;
  let kmsCheckGiven = false;
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
        if (!MODES.includes(v as Mode)) throw new UsageError(`--mode: one of ${MODES.join(', ')}`);
        o.mode = v as Mode;
        break;
      }
      case 'rates': o.rates = nums(value(), name); break;
      case 'duration': o.duration = num(value(), name, 1); durationGiven = true; break;
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
      case 'floor': o.floor = true; break;
      case 'cpu-prof': o.cpuProf = true; break;
      case 'node-args': o.nodeArgs = value().split(/\s+/).filter(Boolean); break;
      case 'out': o.out = value(); break;
      case 'keep': o.keep = true; break;
      case 'target': target().url = value(); break;
      case 'access-key-id': target().accessKeyId = value(); break;
      case 'secret-file': target().secretFile = value(); break;
      case 'key-id': target().keyIds = value().split(',').filter(Boolean); break;
      case 'region': target().region = value(); break;
      case 'ca': target().ca = value(); break;
      case 'cert': target().cert = value(); break;
      case 'key': target().key = value(); break;
      case 'kms-check-seconds': o.kmsCheckSeconds = num(value(), name); kmsCheckGiven = true; break;
      case 'multiples': o.multiples = nums(value(), name); break;
      case 'payload': {
        const v = value();
        if (v !== 'small' && v !== 'large' && v !== 'both') throw new UsageError('--payload: small, large or both');
        o.payloads = v === 'both' ? ['small', 'large'] : [v];
        payloadGiven = true;
        break;
      }
      case 'capacity-connections': o.capacityConnections = Math.round(num(value(), name, 1)); break;
      case 'flood-connections': o.floodConnections = Math.round(num(value(), name, 1)); break;
      case 'capacity': o.capacity = num(value(), name, 1); break;
      case 'capacity-steps': o.capacitySteps = nums(value(), name).map(Math.round); break;
      case 'capacity-step-duration': o.capacityStepDuration = num(value(), name, 1); break;
      case 'max-connections': o.maxConnections = Math.round(num(value(), name, 1)); break;
      case 'generator': {
        const v = value();
        if (v !== 'open-loop' && v !== 'autocannon') throw new UsageError('--generator: open-loop or autocannon');
        o.generator = v;
        break;
      }
      case 'hostile-share': {
        const v = num(value(), name);
        if (v <= 0 || v > 10) throw new UsageError('--hostile-share: a share of the rate in (0, 10]');
        o.hostileShare = v;
        break;
      }
      case 'hsms': {
        const v = num(value(), name, 1);
        if (!Number.isInteger(v) || v > 10) throw new UsageError('--hsms: 1 to 10');
        o.hsms = v;
        break;
      }
      case 'hsm-loss':
        o.hsmLoss = true;
        break;
      case 'pin': {
        // A bare --pin takes the default split; a value is recognised by its "proxy=" or "bench=".
        const v = inline ?? (/^(proxy|bench)=/.test(argv[i + 1] ?? '') ? argv[++i] : undefined);
        o.pin = v === undefined ? true : parsePin(v);
        break;
      }
      case 'help':
      case 'h':
        console.log(USAGE);
        process.exit(0);
        break;
      default:
        throw new UsageError(`unknown option ${flag}\n\n${USAGE}`);
    }
  }
  // A short run asked for with --duration is short throughout, the KMS-shaped check included.
  if (durationGiven && !kmsCheckGiven) o.kmsCheckSeconds = o.duration;
  if (o.pin && o.target) throw new UsageError('--pin is for a proxy this bench starts: a deployed proxy (--target) runs on its own machine');
  if (o.target) {
    for (const [flag, v] of [['--target', o.target.url], ['--access-key-id', o.target.accessKeyId], ['--secret-file', o.target.secretFile], ['--key-id', o.target.keyIds]] as const) {
      if (v === undefined) throw new UsageError(`${flag} is required against a deployed proxy (see --help)`);
    }
    o.baseline = false;
  }
  // The stress modes measure the proxy alone; the hostile one reports how much audit it writes.
  if (o.mode === 'overload' || o.mode === 'flood' || o.mode === 'hostile') o.baseline = false;
  // The flood of issue 22 is of the largest requests XKS allows.
  if (o.mode === 'flood' && !payloadGiven) o.payloads = ['large'];
  if (o.mode === 'hostile' && !o.target) o.audit = true;
  return o;
}

const CPU_LIST = /^\d+(-\d+)?(,\d+(-\d+)?)*$/;

/** "proxy=1,bench=0" (lists in taskset -c syntax, so "proxy=2-3,bench=0,1" too). */
function parsePin(v: string): { proxy: string; bench: string } {
  const sides: Record<string, string> = {};
  for (const part of v.split(/,(?=(?:proxy|bench)=)/)) {
    const m = /^(proxy|bench)=(.+)$/.exec(part);
    if (!m || !CPU_LIST.test(m[2] as string)) throw new UsageError(`--pin: proxy=LIST,bench=LIST with CPU lists such as 1 or 2-3 or 0,2; got "${v}"`);
    sides[m[1] as string] = m[2] as string;
  }
  if (!sides.proxy || !sides.bench) throw new UsageError('--pin: both proxy= and bench= lists, or neither (default split)');
  const shared = cpuList(sides.proxy).filter((c) => cpuList(sides.bench as string).includes(c));
  if (shared.length) throw new UsageError(`--pin: CPU ${shared.join(',')} is in both lists; the point is that the two sides do not share`);
  return { proxy: sides.proxy, bench: sides.bench };
}

/** The CPU lists of --pin, and this process pinned to its own. */
function applyPin(spec: true | { proxy: string; bench: string }): Pin {
  let proxy: string;
  let bench: string;
  const cpus = cpuList(ownCpus());
  if (spec === true) {
    if (cpus.length < 2) throw new UsageError(`--pin needs at least 2 CPUs, this process may use ${cpus.length}`);
    const half = Math.floor(cpus.length / 2);
    bench = cpus.slice(0, half).join(',');
    proxy = cpus.slice(half).join(',');
  } else {
    ({ proxy, bench } = spec);
    const outside = [...cpuList(proxy), ...cpuList(bench)].filter((c) => !cpus.includes(c));
    if (outside.length) throw new UsageError(`--pin: CPU ${outside.join(',')} is not among the CPUs this process may use (${cpus.join(',')})`);
  }
  pinProcess(process.pid, bench);
  return { proxy, bench, proxyCpus: cpuList(proxy).length };
}

/** The CPUs every thread of each side may use now: one list each when the pinning held. */
function pinObserved(pin: Pin | undefined, proxyPid: number | undefined): Record<string, unknown> | null {
  if (!pin) return null;
  const proxy = proxyPid ? treeAffinity(proxyPid) : [];
  const bench = threadAffinity(process.pid);
  const same = (seen: string[], want: string): boolean => seen.length === 1 && cpuList(seen[0] as string).join(',') === cpuList(want).join(',');
  if (!same(proxy, pin.proxy) || !same(bench, pin.bench)) note(`warning: pinning did not hold: proxy threads on ${proxy.join(' | ')} (wanted ${pin.proxy}), bench threads on ${bench.join(' | ')} (wanted ${pin.bench})`);
  return { proxy: pin.proxy, bench: pin.bench, observed: { proxyThreads: proxy, benchThreads: bench } };
}

const pinText = (pin: Pin | undefined): string => (pin ? `, pinned: proxy on CPU ${pin.proxy}, load generator on CPU ${pin.bench}` : '');

const note = (msg: string): void => void process.stderr.write(`bench: ${msg}\n`);



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

interface Target {
  label: 'proxy' | 'baseline' | 'floor';
  endpoint: Endpoint;
  /** Root of the server's process tree (local runs): its CPU time is measured. */
  pid?: number;
  metricsPort?: number;
}

/** What the measuring part needs, from a proxy this bench started or from a deployed one. */
interface Prepared {
  targets: Target[];
  proxy: Endpoint;
  basePath: string;
  cred: Credential;
  keys: Keys;
  workers?: number;
  /** --hsm-loss: stops the remote HSM now and starts it again after `ms`; resolves once it is back. */
  loseHsm?: (ms: number) => Promise<void>;
  /** The proxy as described in the JSON result (called once the local proxy has stopped). */
  describe: () => Record<string, unknown>;
  /** Extra lines for the printed report. */
  notes: () => string[];
  /** Local proxy: its ops port and log/audit files (stress modes). */
  opsPort?: number;
  files?: { log: string; audit?: string };
  /** --pin: the CPUs of each side. */
  pin?: Pin;
}

/** --hsm-loss: the remote HSM's p11-kit server as currently running. */
let lost: HsmSetup | undefined;

/** The demo token, the proxy (and the baseline) on 127.0.0.1. */
async function startLocal(opt: Options, dir: string, outDir: string, stamp: string): Promise<Prepared> {
  const mainJs = productJs('main.js');
  const baselineJs = benchJs('baseline-server.js');
  if (!existsSync(mainJs) || !existsSync(baselineJs)) throw new Error('run "npm run build:bench" first');
  // Pinned first, so that the token setup and every thread started later stay on the bench's CPUs.
  let pin: Pin | undefined;
  try {
    pin = opt.pin ? applyPin(opt.pin) : undefined;
  } catch (e) {
    // taskset missing or refusing a list: a setup problem, said in one line.
    throw new UsageError((e as Error).message);
  }
  if (pin) note(`pinned: proxy on CPU ${pin.proxy}, this bench (load generator, all threads) on CPU ${pin.bench}`);
  const workers = opt.workers === 'auto' ? Math.max(1, pin ? pin.proxyCpus : os.availableParallelism()) : Number(opt.workers);

  // ---- demo token and config: setup-token's output with server.* overridden
  const port = await freePortPair();
  note(`setting up a SoftHSM2 token in ${dir}`);
  execFileSync('bash', [join(ROOT, 'softhsm', 'setup-token.sh'), dir, String(port)], { stdio: ['ignore', 'ignore', 'inherit'] });
  const config = parse(readFileSync(join(dir, 'config.yaml'), 'utf8')) as Record<string, Record<string, unknown>>;
  config.server = { ...config.server, host: '127.0.0.1', port, workers: opt.workers === 'auto' && !pin ? 'auto' : workers };
  if (opt.audit) config.audit = { ...(config.audit ?? {}), file: join(dir, 'audit.log') };
  let remote: HsmSetup | undefined;
  if (opt.hsmLoss) {
    if (opt.hsms < 3) throw new UsageError('--hsm-loss needs --hsms 3 or more (two in process, one behind p11-kit)');
    remote = await createSetup('p11kit', join(dir, 'remote'));
    // The p11-kit server is its own process group: it goes with the bench however the bench ends.
    process.on('exit', () => lost && stopSetup(lost));
  }
  if (opt.hsms > 1) {
    note(`making a fleet of ${opt.hsms} SoftHSM2 tokens (demo keys replicated)${remote ? ', the last behind p11-kit' : ''}`);
    makeBenchFleet(dir, config, opt.hsms, remote);
  }
  for (const [path, v] of opt.sets) {
    const parts = path.split('.');
    // hsm.X on a fleet: every HSM of it.
    const roots = parts[0] === 'hsm' && Array.isArray(config.hsms) ? (config.hsms as Record<string, unknown>[]) : [config as Record<string, unknown>];
    for (const rootNode of roots) {
      let node = rootNode;
      for (const part of (roots[0] === config ? parts : parts.slice(1)).slice(0, -1)) node = (node[part] ??= {}) as Record<string, unknown>;
      node[parts[parts.length - 1] as string] = v;
    }
  }
  const configFile = join(dir, 'bench-config.yaml');
  writeFileSync(configFile, stringify(config), { mode: 0o600 });
  const opsPort = Number((config.ops as { port?: number } | undefined)?.port ?? port + 1);
  const { cred, uriPath } = parseCredentialJson(readFileSync(join(dir, 'secrets', 'primary.json'), 'utf8'));

  // ---- proxy
  const logFile = join(dir, 'proxy.log');
  const profDir = join(outDir, `${stamp}-prof`);
  const nodeArgs = [...opt.nodeArgs, ...(opt.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [])];
  const logFd = openSync(logFile, 'a');
  const proxy = startChild([...nodeArgs, mainJs, '--config', configFile], { stdout: logFd, env: { ...process.env, XKS_LOG_LEVEL: opt.logLevel }, cpus: pin?.proxy });
  closeSync(logFd); // the child has its own copy
  try {
    await waitFor('proxy', proxy, async () => (await httpStatus(opsPort, '/readyz')) === 200);
  } catch (e) {
    throw new Error(`${(e as Error).message}\n--- ${logFile}\n${logTail(logFile)}`, { cause: e });
  }
  note(`proxy ready on 127.0.0.1:${port} (ops ${opsPort}), workers ${workers}, pid ${proxy.pid}${pin ? `, CPUs ${treeAffinity(proxy.pid as number).join(' | ')}` : ''}`);
  const targets: Target[] = [{ label: 'proxy', endpoint: localEndpoint(port), pid: proxy.pid, metricsPort: opsPort }];

  // ---- the servers compared with the proxy, as many processes as its workers: bare node:http, and
  // (--floor) the must-haves alone on the same token and config. `answers`: their status to a POST on '/'.
  const comparison = async (label: 'baseline' | 'floor', js: string, args: string[], answers: number): Promise<void> => {
    const port = await freePortPair();
    const child = startChild([js, ...args, '--port', String(port), '--workers', String(workers)], { stdout: 'inherit', cpus: pin?.proxy });
    await waitFor(label, child, async () => (await httpStatus(port, '/', 'POST')) === answers);
    targets.push({ label, endpoint: localEndpoint(port), pid: child.pid });
    note(`${label} ready on 127.0.0.1:${port} (${workers} process${workers > 1 ? 'es' : ''})`);
  };
  if (opt.baseline) await comparison('baseline', baselineJs, [], 200);
  if (opt.floor && opt.mode === 'fixed') await comparison('floor', benchJs('floor-server.js'), ['--config', configFile], 500);

  let proxyLog: ReturnType<typeof logSummary> | undefined;
  const log = (): ReturnType<typeof logSummary> => (proxyLog ??= logSummary(logFile));
  lost = remote;
  const loseHsm = lost
    ? async (ms: number): Promise<void> => {
        stopSetup(lost as HsmSetup);
        await new Promise((r) => setTimeout(r, ms));
        lost = await restartSetup(lost as HsmSetup);
      }
    : undefined;
  return {
    loseHsm,
    targets,
    proxy: localEndpoint(port),
    basePath: uriPath!,
    cred,
    keys: DEMO_KEYS,
    workers,
    opsPort,
    pin,
    files: { log: logFile, audit: opt.audit ? join(dir, 'audit.log') : undefined },
    describe: () => ({
      workers,
      logLevel: opt.logLevel,
      audit: opt.audit,
      hsm: (({ sessionPoolSize, asyncCalls }) => ({ sessionPoolSize, asyncCalls: asyncCalls ?? 'default' }))((config.hsm ?? (config.hsms as unknown as Record<string, unknown>[])[0]) as Record<string, unknown>),
      hsms: opt.hsms,
      limits: config.limits ?? 'defaults',
      log: log(),
    }),
    notes: () => {
      const out: string[] = [];
      if (opt.cpuProf && existsSync(profDir)) out.push(`profiles: ${readdirSync(profDir).map((f) => join(profDir, f)).join(' ')}  (node dist-bench/bench/profile-summary.js FILE)`);
      const l = log();
      if (l.errors + l.warnings > 0) {
        out.push(`warning: the proxy logged ${l.errors} error and ${l.warnings} warning lines, first: ${l.first ?? ''}${opt.keep ? ` (${logFile})` : ' (--keep keeps the log)'}`);
      }
      return out;
    },
  };
}

/** A deployed proxy: nothing is started; the first requests prove URL, TLS, credential and keys. */
async function prepareRemote(opt: Options): Promise<Prepared> {
  const t = remoteTarget(opt.target as TargetOptions);
  await checkTarget(t);
  const url = (opt.target as TargetOptions).url;
  note(`target ${url} answers health and encrypt with key${t.keys.encrypt.length > 1 ? 's' : ''} ${t.keys.encrypt.join(', ')}`);
  return {
    targets: [{ label: 'proxy', endpoint: t.endpoint }],
    proxy: t.endpoint,
    basePath: t.basePath,
    cred: t.cred,
    keys: t.keys,
    describe: () => ({ target: url, basePath: t.basePath, region: t.endpoint.region, keys: t.keys, mtls: Boolean(t.endpoint.tls?.cert) }),
    notes: () => [NO_BASELINE],
  };
}

/** --mode overload or hostile: run, write JSON and SVG, print the tables. */
async function stress(opt: Options, p: Prepared, outDir: string, stamp: string): Promise<void> {
  const proxy = p.targets[0] as Target;
  const t: StressTarget = { endpoint: p.proxy, basePath: p.basePath, cred: p.cred, keys: p.keys, pid: proxy.pid, opsPort: p.opsPort, files: p.files };
  const common: StressOptions = { mix: opt.mix, pool: opt.pool, pacing: opt.pacing, warmupS: opt.warmup, rampS: opt.ramp, durationS: opt.duration, note };
  const who = opt.target ? `proxy at ${opt.target.url}` : `proxy workers ${p.workers}${pinText(p.pin)}`;
  const head = { timestamp: new Date().toISOString(), git: gitDescribe(ROOT), machine: { node: process.version, cpus: os.availableParallelism(), loadavg: os.loadavg().map((v) => Math.round(v * 100) / 100) }, options: opt };
  const out: string[] = [''];
  let body: Record<string, unknown>;
  let svg: string;
  if (opt.mode === 'overload') {
    const r = await runOverload(t, {
      ...common,
      payloads: opt.payloads,
      multiples: opt.multiples,
      capacity: opt.capacity,
      capacitySteps: opt.capacitySteps,
      capacityStepS: opt.capacityStepDuration,
      minConnections: opt.connections,
      maxConnections: opt.maxConnections,
      generator: opt.generator,
    });
    const verdicts = opt.payloads.map((pl) => verdict(pl, r.steps));
    body = { overload: r, verdicts: verdicts.map(({ payload, pass, line }) => ({ payload, pass, line })) };
    svg = overloadChart(`xks-proxy under overload, mix ${opt.mix}, ${who}, ${head.git ?? ''} ${head.timestamp.slice(0, 16)}`, r.steps);
    out.push(
      `OVERLOAD  mix ${opt.mix}, ${who}; capacity ${Object.entries(r.capacity).map(([pl, c]) => `${pl} ${c.goodput} req/s${c.measured ? '' : ' (given)'}`).join(', ')}; ` +
        `${opt.duration} s per step (first ${Math.min(opt.ramp, opt.duration / 2)} s not measured), ${opt.pacing} pacing, sent by ${p.proxy.tls || opt.pacing === 'burst' || opt.generator === 'autocannon' ? 'autocannon' : 'the open-loop generator'}; latency in ms; readyz/opsHz/xksHz/health: share of probes (every 200 ms, 1 s timeout) answered 200; genCPU: the bench process (load generator, probes), % of one core`,
      overloadTable(r.steps),
      ...(!opt.target && r.steps.some((s) => s.shed.n > 0 && !s.refusal)
        ? ['us/429 -: no price for a served request (--capacity skips the measurement and no step was >= 95% 200s; add a light multiple such as 0.3 first)']
        : []),
      '',
      BAR_TEXT,
      ...verdicts.map((v) => v.line),
      '',
    );
  } else if (opt.mode === 'flood') {
    const runs: FloodResult[] = [];
    for (const payload of opt.payloads) {
      runs.push(await runFlood(t, { ...common, payload, capacityConnections: opt.capacityConnections, floodConnections: opt.floodConnections }));
    }
    const steps = runs.flatMap((r) => r.steps);
    const verdicts = opt.payloads.map((pl) => verdict(pl, steps));
    body = { flood: { steps }, verdicts: verdicts.map(({ payload, pass, line }) => ({ payload, pass, line })) };
    svg = overloadChart(`xks-proxy closed-loop flood, ${who}, ${head.git ?? ''} ${head.timestamp.slice(0, 16)}`, steps);
    out.push(
      `FLOOD  closed loop (each connection sends its next request when its answer arrives), ${who}; ${opt.capacityConnections} connections give the capacity, then ${opt.floodConnections}; ` +
        `${opt.duration} s per step (first ${Math.min(opt.ramp, opt.duration / 2)} s not measured); latency in ms from the client's write; readyz/opsHz/xksHz/health: share of probes (every 200 ms, 1 s timeout) answered 200`,
      overloadTable(steps),
      '',
      BAR_TEXT,
      ...verdicts.map((v) => v.line),
      '',
    );
  } else {
    const r = await runHostile(t, { ...common, rate: opt.rates[0] as number, connections: opt.connections, share: opt.hostileShare });
    body = { hostile: r };
    svg = hostileChart(`xks-proxy, mix ${opt.mix} at ${r.rate} req/s: calm vs ${Math.round(r.hostileShare * 100)}% hostile on top, ${head.git ?? ''} ${head.timestamp.slice(0, 16)}`, r);
    out.push(`HOSTILE MIX  mix ${opt.mix} at ${r.rate} req/s, ${who}, ${opt.connections} connections, ${opt.duration} s per step; then ${r.rate * r.hostileShare} hostile connections/s on top (bad signatures, aborted bodies, slow headers, oversized bodies in equal shares); latency in ms`, hostileTable(r), '');
  }
  const pin = pinObserved(p.pin, proxy.pid);
  await stopAll(opt.cpuProf ? 20_000 : 5_000);
  const jsonFile = join(outDir, `${stamp}.json`);
  const svgFile = join(outDir, `${stamp}.svg`);
  writeFileSync(jsonFile, JSON.stringify({ ...head, pin, proxy: p.describe(), ...body }, null, 2) + '\n');
  writeFileSync(svgFile, svg);
  out.push(`wrote ${jsonFile}`, `wrote ${svgFile}`, ...p.notes());
  console.log(out.join('\n'));
}

const NO_BASELINE = 'no baseline: against a deployed proxy there is no bare server to compare with, and the proxy-side CPU and metrics columns are empty';

async function main(): Promise<void> {
  const opt = parseArgs(process.argv.slice(2));
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const outDir = resolve(process.cwd(), opt.out);
  mkdirSync(outDir, { recursive: true });

  const dir = opt.target ? undefined : mkdtempSync(join(os.tmpdir(), 'xks-bench-'));
  const cleanup = async (): Promise<void> => {
    await stopAll(opt.cpuProf ? 20_000 : 5_000);
    if (dir && !opt.keep) rmSync(dir, { recursive: true, force: true });
  };
  installCleanup(cleanup);
  try {
    const p = dir ? await startLocal(opt, dir, outDir, stamp) : await prepareRemote(opt);
    if (opt.target) note(NO_BASELINE);

    // ---- workload: real ciphertexts, signed pool, one request of each kind must succeed
    const sealed = await makeCiphertexts(p.proxy, p.basePath, p.cred, 128, p.keys);
    const pool = new SignedPool(p.proxy, p.cred, opt.mix, opt.pool, p.basePath, sealed, p.keys);
    for (const s of pool.samples()) {
      const r = await post(p.proxy, s.path, s.body, p.cred);
      if (r.status !== 200) throw new Error(`pre-check ${s.op} ${s.path}: HTTP ${r.status} ${JSON.stringify(r.json)}`);
    }
    note(`pool: ${pool.size} signed requests ${JSON.stringify(pool.counts)}; every operation answered 200`);
    if (opt.mode === 'overload' || opt.mode === 'flood' || opt.mode === 'hostile') {
      await stress(opt, p, outDir, stamp);
      return;
    }

    const run = (t: Target, more: { connections: number; durationS: number; rate?: number; rampS?: number }): Promise<RunStats> =>
      runLoad({ label: t.label, endpoint: t.endpoint, pacing: opt.pacing, pool, serverPid: t.pid, metricsPort: t.metricsPort, ...more });
    if (opt.warmup > 0) {
      for (const t of p.targets) await run(t, { connections: 16, durationS: opt.warmup });
      note(`warmed up (${opt.warmup} s per target)`);
    }
    const pause = (): Promise<void> => new Promise((r) => setTimeout(r, 500));

    // ---- fixed rate
    const fixed: FixedPoint[] = [];
    if (opt.mode !== 'max') {
      for (const rate of opt.rates) {
        const point: Partial<FixedPoint> = { rate };
        for (const t of p.targets) {
          // The loss window: the middle third of the run, the remote HSM stopped.
          const loss = t.label === 'proxy' && p.loseHsm ? new Promise((r) => setTimeout(r, (opt.duration * 1000) / 3)).then(() => p.loseHsm?.((opt.duration * 1000) / 3)) : undefined;
          const s = await run(t, { connections: opt.connections, durationS: opt.duration, rate, rampS: opt.ramp });
          await loss;
          point[t.label] = s;
          note(`fixed ${rate} req/s ${t.label}${loss ? ' (one HSM lost for the middle third)' : ''}: ${brief(s)}`);
          await pause();
        }
        fixed.push(point as FixedPoint);
      }
    }

    // ---- max throughput
    let max: MaxResult | undefined;
    if (opt.mode !== 'fixed') {
      const ramps: Record<string, RunStats[]> = { proxy: [], baseline: [] };
      for (const t of p.targets) {
        let best = 0;
        for (const connections of opt.steps) {
          const s = await run(t, { connections, durationS: opt.stepDuration, rampS: opt.ramp });
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
      const pt = top(ramps.proxy as RunStats[]);
      const b = top(ramps.baseline as RunStats[]);
      max = {
        proxy: ramps.proxy as RunStats[],
        baseline: ramps.baseline as RunStats[],
        proxyMaxRps: pt?.rps ?? 0,
        proxyMaxAt: pt?.connections ?? 0,
        baselineMaxRps: b?.rps ?? 0,
        baselineMaxAt: b?.connections ?? 0,
        ratio: pt && b && b.rps > 0 ? Math.round((pt.rps / b.rps) * 1000) / 1000 : null,
      };
    }

    // ---- what KMS will do: its default rate for a key store, judged against its timeout
    let kms: KmsCheck | undefined;
    if (opt.target && opt.kmsCheckSeconds > 0) {
      const s = await run(p.targets[0] as Target, { connections: opt.connections, durationS: opt.kmsCheckSeconds, rate: KMS_RATE, rampS: opt.ramp });
      kms = kmsCheck(s, KMS_RATE, KMS_TIMEOUT_MS);
      note(`KMS-shaped check ${KMS_RATE} req/s for ${opt.kmsCheckSeconds} s: ${brief(s)}, ${(s.withinKmsTimeout * 100).toFixed(2)}% within ${KMS_TIMEOUT_MS} ms`);
    }

    // ---- stop the proxy first so that --cpu-prof profiles are written, then report
    const pin = pinObserved(p.pin, p.targets[0]?.pid);
    await stopAll(opt.cpuProf ? 20_000 : 5_000);

    const result = {
      timestamp: new Date().toISOString(),
      git: gitDescribe(ROOT),
      machine: { node: process.version, cpus: os.availableParallelism(), cpuModel: os.cpus()[0]?.model, loadavg: os.loadavg().map((v) => Math.round(v * 100) / 100) },
      options: opt,
      pin,
      proxy: p.describe(),
      baselineProcesses: opt.baseline ? p.workers : 0,
      baseline: opt.target ? NO_BASELINE : undefined,
      pool: { size: pool.size, counts: pool.counts, signatures: pool.signatures },
      fixed,
      max,
      kmsCheck: kms,
    };
    const jsonFile = join(outDir, `${stamp}.json`);
    const svgFile = join(outDir, `${stamp}.svg`);
    writeFileSync(jsonFile, JSON.stringify(result, null, 2) + '\n');
    const what = opt.target ? `xks-proxy at ${opt.target.url} (no baseline)` : `xks-proxy vs bare node:http — workers ${p.workers}`;
    writeFileSync(svgFile, chart(`${what}, mix ${opt.mix}, ${opt.pacing} pacing, ${result.git ?? ''} ${result.timestamp.slice(0, 16)}`, fixed, max));

    const out: string[] = [''];
    const who = opt.target ? `proxy at ${opt.target.url}` : `proxy workers ${p.workers}${pinText(p.pin)}`;
    if (fixed.length) {
      out.push(`FIXED RATE  mix ${opt.mix}, ${who}, ${opt.connections} connections, ${opt.duration} s per run (first ${Math.min(opt.ramp, opt.duration / 2)} s not measured), ${opt.pacing} pacing; latency in ms`);
      out.push(fixedTable(fixed), '');
    }
    if (max) {
      out.push(`MAX THROUGHPUT  ${who}, no rate cap, ${opt.stepDuration} s per step (first ${Math.min(opt.ramp, opt.stepDuration / 2)} s not measured); latency in ms`);
      out.push(maxTable(max), '');
    }
    if (kms) out.push(`KMS-SHAPED CHECK  ${who}: ${KMS_RATE} req/s (KMS's default per key store) for ${opt.kmsCheckSeconds} s against KMS's ${KMS_TIMEOUT_MS} ms timeout`, kmsCheckTable(kms), '');
    const all = [...fixed.flatMap((f) => [f.proxy, f.baseline]), ...(max ? [...max.proxy, ...max.baseline] : [])].filter((s): s is RunStats => s !== undefined);
    const busiest = Math.max(0, ...all.map((s) => s.cpu.otherPct));
    if (busiest > 20) {
      out.push(`warning: other processes used up to ${busiest}% of a core during a run; this box is shared and the numbers are skewed (rerun when it is quiet)`);
    }
    const lateRuns = fixed.flatMap((f) => [f.proxy, f.baseline]).filter((s): s is RunStats => s !== undefined && s.late > s.requests * 0.001);
    if (lateRuns.length) {
      out.push(`note: ${lateRuns.map((s) => `${s.label}@${s.offeredRate}`).join(', ')} fell behind the schedule (late > 0.1%): the target is saturated or --connections is too low; latency is understated there`);
    }
    out.push(`wrote ${jsonFile}`, `wrote ${svgFile}`, ...p.notes());
    console.log(out.join('\n'));
  } finally {
    await cleanup();
  }
}

main().catch((e) => {
  console.error(`bench: ${e instanceof UsageError || e instanceof TargetError ? e.message : ((e as Error).stack ?? e)}`);
  process.exitCode = 1;
  void stopAll(2000);
});
