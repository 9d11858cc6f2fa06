/**
 * One autocannon run against one target, with exact latency percentiles and CPU accounting.
 *
 * Why not just autocannon's own numbers:
 *  - its latency histogram has 1 ms resolution (lowestDiscernibleValue 1): a 0.4 ms answer is "0",
 *    so p50/p99 of a fast server are meaningless. We record every response time (float ms, from the
 *    moment the request was written) from the instance's 'response' event and compute percentiles
 *    exactly; autocannon's totals (requests, non-2xx, errors, timeouts) are kept as is.
 *  - its overallRate is a per-second budget per connection: each connection sends back to back
 *    until its share of the second is spent, then idles until the next second. All connections
 *    refill together, so the offered load arrives as one burst at the start of every second.
 *    pacing "smooth" (default) instead spaces each connection's requests evenly
 *    (connections / rate apart, random phase per connection) by wrapping autocannon's client
 *    (setupClient, autocannon 9 internals: Client#_doRequest). pacing "burst" keeps overallRate.
 *  - "late" counts requests sent after their slot because the connection was still waiting on the
 *    previous answer: the open-loop schedule slipped (coordinated omission). Latencies are then
 *    understated; raise --connections until late is 0.
 */
import { availableParallelism } from 'node:os';
import autocannonUntyped from 'autocannon';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import type { OpenLoopStats } from './open-loop-worker';
import { type Endpoint, errorNameOf, type SignedPool } from './workload';
import { boxCpu, cpuPressureUs, treeCpuSeconds } from './processes';

const autocannon = autocannonUntyped as (opts: Record<string, unknown>) => AutocannonInstance;

interface AutocannonInstance extends PromiseLike<AutocannonResult> {
  on(event: 'response', fn: (client: unknown, statusCode: number, bytes: number, ms: number) => void): void;
  stop(): void;
}

interface AutocannonResult {
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  resets: number;
  '2xx': number;
  statusCodeStats: Record<string, { count: number }>;
  latency: { p99: number };
  requests: { total: number; sent: number };
}

/** Internals of autocannon 9's http client that smooth pacing relies on. */
interface AcClient {
  rate: number;
  reqsMade: number;
  destroyed: boolean;
  _doRequest: (...args: unknown[]) => void;
  on(event: 'done', fn: () => void): void;
}

export type Pacing = 'smooth' | 'burst';

export interface LoadSpec {
  label: string;
  endpoint: Endpoint;
  connections: number;
  durationS: number;
  /** Offered req/s; undefined = as fast as the connections go (closed loop). */
  rate?: number;
  pacing: Pacing;
  pool: SignedPool;
  /** Root pid of the server process tree, for its CPU time; absent for a remote target. */
  serverPid?: number;
  /** The proxy's ops port: its /metrics is read before and after the run. */
  metricsPort?: number;
  /**
   * Seconds at the start whose answers are left out of the latency percentiles and req/s (connection
   * setup: every run opens its connections at once). The timeline keeps them.
   */
  rampS?: number;
  /** Every answer (status, latency ms, ms since the run started), for callers that split by status. */
  onResponse?: (status: number, ms: number, atMs: number) => void;
}

/** What the proxy itself saw during a run (from its Prometheus metrics). */
interface ServerView {
  /**
   * Event-loop delay over the run as prom-client reports it (timer-based, so every value includes the
   * monitoring resolution; in cluster mode the average of the workers' values).
   */
  eventLoopLagMs: { min: number; mean: number; p99: number; max: number };
  /** Longest event-loop stall: lag max - lag min (removes the resolution). */
  stallMaxMs: number;
  /** Share of requests answered within each bucket bound (xks_request_duration_seconds, handler start to end). */
  withinMs: Record<string, number>;
  /** Smallest bucket bound holding 99% of the requests. */
  p99AtMostMs: number | null;
  gcMs: number;
}

interface Latency {
  p50: number;
  p90: number;
  p99: number;
  p99_9: number;
  max: number;
  mean: number;
}

export interface RunStats {
  label: string;
  offeredRate: number | null;
  pacing: Pacing | null;
  connections: number;
  durationS: number;
  /** Leading seconds left out of latency and req/s. */
  rampS: number;
  /** Responses received after the ramp. */
  requests: number;
  /** Requests written (whole run): sent - answered - errors - timeouts were in flight at the stop. */
  sent: number;
  rps: number;
  latencyMs: Latency;
  /** autocannon's own p99 (integer ms), for comparison; null from the open-loop generator. */
  autocannonP99Ms: number | null;
  non2xx: number;
  errors: number;
  timeouts: number;
  resets: number;
  /** Per second of the run: answers, p99 and max latency (ms). */
  timeline: { s: number; n: number; p99: number; max: number }[];
  /** errorName (or HTTP status) of non-2xx answers. */
  errorNames: Record<string, number>;
  /** First few non-2xx bodies, for diagnosis. */
  errorSamples: string[];
  late: number;
  /**
   * Share of the requests sent after the ramp that were answered within KMS's 250 ms timeout
   * (requests that timed out count as over).
   */
  withinKmsTimeout: number;
  /** Signatures the load generator computed during the run (pool refresh). */
  signatures: number;
  /** The open-loop generator's own figures (bench/lib/open-loop.ts); absent from autocannon runs. */
  openLoop?: OpenLoopStats;
  server?: ServerView;
  cpu: {
    /** % of one core. */
    serverPct: number;
    loadgenPct: number;
    /** % of the whole machine (all cores). */
    boxPct: number;
    /**
     * % of one core busy outside the server and the load generator: other processes (a test run
     * on the same box skews everything), plus kernel softirq time for loopback networking.
     */
    otherPct: number;
    /** % of the run during which some runnable thread waited for a CPU (Linux PSI): scheduler contention. */
    pressurePct: number | null;
    /** Server CPU per answered request, microseconds. */
    serverUsPerReq: number;
    /** Server CPU seconds over the whole run (ramp included, as serverUsPerReq); 0 without a server pid. */
    serverS: number;
  };
}

const r3 = (v: number): number => Math.round(v * 1000) / 1000;

/** KMS gives each call to the proxy 250 ms, network included. */
export const KMS_TIMEOUT_MS = 250;

function summarize(sorted: Float64Array): Latency {
  const a = sorted;
  const at = (q: number): number => (a.length ? (a[Math.min(a.length - 1, Math.ceil(q * a.length) - 1)] as number) : 0);
  let sum = 0;
  for (const v of a) sum += v;
  return { p50: r3(at(0.5)), p90: r3(at(0.9)), p99: r3(at(0.99)), p99_9: r3(at(0.999)), max: r3(a.length ? (a[a.length - 1] as number) : 0), mean: r3(a.length ? sum / a.length : 0) };
}

/** Every response time (ms) with the time it arrived (ms since the run started). */
class Samples {
  private lat: Float64Array = new Float64Array(1 << 16);
  private at: Float64Array = new Float64Array(1 << 16);
  n = 0;
  push(latency: number, at: number): void {
    if (this.n === this.lat.length) {
      const grow = (a: Float64Array): Float64Array => {
        const b = new Float64Array(a.length * 2);
        b.set(a);
        return b;
      };
      this.lat = grow(this.lat);
      this.at = grow(this.at);
    }
    this.lat[this.n] = latency;
    this.at[this.n++] = at;
  }
  /** Latency of the answers that arrived from `fromMs` on, how many, and how many within `withinMs`. */
  summary(fromMs = 0, withinMs = KMS_TIMEOUT_MS): { latency: Latency; n: number; within: number } {
    const kept = new Float64Array(this.n);
    let k = 0;
    let within = 0;
    for (let i = 0; i < this.n; i++) {
      if ((this.at[i] as number) < fromMs) continue;
      const l = this.lat[i] as number;
      kept[k++] = l;
      if (l <= withinMs) within++;
    }
    return { latency: summarize(kept.subarray(0, k).sort()), n: k, within };
  }
  /** Per-second answers, p99 and max: shows whether the tail is steady or a few stalls. */
  timeline(): { s: number; n: number; p99: number; max: number }[] {
    const buckets = new Map<number, number[]>();
    for (let i = 0; i < this.n; i++) {
      const s = Math.floor((this.at[i] as number) / 1000);
      let b = buckets.get(s);
      if (!b) buckets.set(s, (b = []));
      b.push(this.lat[i] as number);
    }
    return [...buckets].map(([s, list]) => {
      const l = summarize(Float64Array.from(list).sort());
      return { s, n: list.length, p99: l.p99, max: l.max };
    });
  }
}

/** What a load generator reports at the end of a run; measureRun adds the latencies, CPU and the server's view. */
export interface GeneratorTotals {
  /** Seconds the generator ran. */
  durationS: number;
  sent: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  resets: number;
  late: number;
  errorNames: Record<string, number>;
  errorSamples: string[];
  autocannonP99Ms: number | null;
  openLoop?: OpenLoopStats;
}

/** Every answer as it arrives: status, latency (ms), ms since the run started. */
export type Record3 = (status: number, ms: number, atMs: number) => void;

/**
 * One run of any load generator, measured the same way: `drive` runs the generator, hands every answer
 * to `record` (with times relative to `t0`, this module's performance.now() at the start) and resolves
 * with its totals; around it, the server's and this process's CPU, the box, and the proxy's metrics.
 */
export async function measureRun(spec: LoadSpec, drive: (record: Record3, t0: number) => Promise<GeneratorTotals>): Promise<RunStats> {
  const samples = new Samples();
  const rampMs = Math.min(spec.rampS ?? 0, spec.durationS / 2) * 1000;
  const metricsBefore = spec.metricsPort ? await scrape(spec.metricsPort) : undefined; // also resets the lag histogram
  const signaturesBefore = spec.pool.signatures;
  const serverCpu = (): number => (spec.serverPid === undefined ? 0 : treeCpuSeconds(spec.serverPid));
  const serverBefore = serverCpu();
  const boxBefore = boxCpu();
  const pressureBefore = cpuPressureUs();
  const loadBefore = process.cpuUsage();
  const wallBefore = performance.now();

  const hook = spec.onResponse;
  const result = await drive((status, ms, at) => {
    samples.push(ms, at);
    hook?.(status, ms, at);
  }, wallBefore);

  const wallS = (performance.now() - wallBefore) / 1000;
  const load = process.cpuUsage(loadBefore);
  const serverS = serverCpu() - serverBefore;
  const boxAfter = boxCpu();
  const pressureAfter = cpuPressureUs();
  const metricsAfter = spec.metricsPort ? await scrape(spec.metricsPort) : undefined;
  const pct = (v: number): number => Math.round(v * 1000) / 10;
  const boxShare = (boxAfter.busy - boxBefore.busy) / Math.max(1, boxAfter.total - boxBefore.total);
  const serverPct = pct(serverS / wallS);
  const loadgenPct = pct((load.user + load.system) / 1e6 / wallS);
  const durationS = result.durationS || spec.durationS;
  const measured = samples.summary(rampMs);
  const requests = measured.n;
  const measuredS = Math.max(0.001, durationS - rampMs / 1000);
  return {
    label: spec.label,
    offeredRate: spec.rate ?? null,
    pacing: spec.rate === undefined ? null : spec.pacing,
    connections: spec.connections,
    durationS: Math.round(durationS * 100) / 100,
    rampS: rampMs / 1000,
    requests,
    sent: result.sent,
    rps: Math.round(requests / measuredS),
    latencyMs: measured.latency,
    timeline: samples.timeline(),
    autocannonP99Ms: result.autocannonP99Ms,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    resets: result.resets,
    errorNames: result.errorNames,
    errorSamples: result.errorSamples,
    late: result.late,
    withinKmsTimeout: Math.round((measured.within / Math.max(1, requests + result.timeouts)) * 100000) / 100000,
    server: metricsBefore && metricsAfter ? serverView(metricsBefore, metricsAfter) : undefined,
    signatures: spec.pool.signatures - signaturesBefore,
    cpu: {
      serverPct,
      loadgenPct,
      boxPct: pct(boxShare),
      pressurePct: pressureBefore !== undefined && pressureAfter !== undefined ? pct((pressureAfter - pressureBefore) / 1e6 / wallS) : null,
      otherPct: Math.max(0, Math.round(pct(boxShare * availableParallelism()) - serverPct - loadgenPct)),
      serverUsPerReq: samples.n ? Math.round((serverS * 1e6) / samples.n) : 0,
      serverS: r3(serverS),
    },
    ...(result.openLoop ? { openLoop: result.openLoop } : {}),
  };
}

/** One run with autocannon (fixed, max, capacity, flood and hostile modes; open-loop steps against an https target). */
export function runLoad(spec: LoadSpec): Promise<RunStats> {
  const errorNames: Record<string, number> = {};
  const errorSamples: string[] = [];
  let late = 0;
  const smooth = spec.rate !== undefined && spec.pacing === 'smooth';
  const intervalMs = spec.rate ? (spec.connections * 1000) / spec.rate : 0;
  const rampMs = Math.min(spec.rampS ?? 0, spec.durationS / 2) * 1000;

  const ep = spec.endpoint;
  const opts: Record<string, unknown> = {
    url: `${ep.tls ? 'https' : 'http'}://${ep.host}:${ep.port}`,
    // autocannon connects without verifying the certificate; post() checked it against the CA at setup.
    ...(ep.tls ? { tlsOptions: { cert: ep.tls.cert, key: ep.tls.key }, servername: ep.tls.servername } : {}),
    connections: spec.connections,
    duration: spec.durationS,
    pipelining: 1,
    timeout: 10,
    requests: [
      {
        method: 'POST',
        setupRequest: () => spec.pool.next(),
        onResponse: (status: number, body: string) => {
          if (status >= 200 && status < 300) return;
          const name = errorNameOf(status, body);
          errorNames[name] = (errorNames[name] ?? 0) + 1;
          if (errorSamples.length < 5) errorSamples.push(`${status} ${body.slice(0, 300)}`);
        },
      },
    ],
  };
  if (spec.rate !== undefined && spec.pacing === 'burst') {
    opts.overallRate = spec.rate;
    // Its correction assumes 1 ms spacing (ceil(1 / per-connection rate)) and would invent samples.
    opts.ignoreCoordinatedOmission = true;
  }
  let t0 = 0; // set just before autocannon builds its clients (setupClient runs then)
  if (smooth) {
    opts.setupClient = (c: AcClient) => {
      if (typeof c._doRequest !== 'function') throw new Error('autocannon internals changed (Client#_doRequest): use --pacing burst');
      c.rate = 0; // autocannon's per-second budget off: we pace
      const send = c._doRequest;
      let next = t0 + Math.random() * intervalMs;
      let timer: NodeJS.Timeout | undefined;
      c._doRequest = function paced(this: AcClient, ...args: unknown[]) {
        if (timer || this.destroyed) return; // a reconnect while a send is scheduled
        const now = performance.now();
        const wait = next - now;
        next += intervalMs;
        if (wait > 0.5) {
          timer = setTimeout(() => {
            timer = undefined;
            if (!this.destroyed) send.apply(this, args);
          }, wait);
          return;
        }
        if (wait < -1 && this.reqsMade > 0 && now - t0 >= rampMs) late++;
        send.apply(this, args);
      };
      c.on('done', () => {
        clearTimeout(timer);
        timer = undefined;
      });
    };
  }

  return measureRun(spec, async (record, start) => {
    t0 = start;
    const instance = autocannon(opts);
    instance.on('response', (_client, status, _bytes, ms) => record(status, ms, performance.now() - start));
    const result = await instance;
    return {
      durationS: result.duration,
      sent: result.requests.sent,
      non2xx: result.non2xx,
      errors: result.errors,
      timeouts: result.timeouts,
      resets: result.resets,
      late,
      errorNames,
      errorSamples,
      autocannonP99Ms: result.latency.p99,
    };
  });
}

type Series = Map<string, number>;

function scrape(port: number): Promise<Series> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/metrics', agent: false, timeout: 5000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        const out: Series = new Map();
        for (const line of text.split('\n')) {
          if (!line || line.startsWith('#')) continue;
          const i = line.lastIndexOf(' ');
          out.set(line.slice(0, i), Number(line.slice(i + 1)));
        }
        resolve(out);
      });
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(new Map()));
  });
}

function serverView(before: Series, after: Series): ServerView | undefined {
  if (after.size === 0) return undefined;
  const one = (name: string): number => Math.round((after.get(name) ?? 0) * 1e5) / 100;
  const sumDelta = (match: (k: string) => boolean): number => {
    let v = 0;
    for (const [k, a] of after) if (match(k)) v += a - (before.get(k) ?? 0);
    return v;
  };
  const les = new Set<string>();
  for (const k of after.keys()) {
    const m = /^xks_request_duration_seconds_bucket\{.*le="([^"]+)"/.exec(k);
    if (m) les.add(m[1] as string);
  }
  const within: Record<string, number> = {};
  const inf = sumDelta((k) => k.startsWith('xks_request_duration_seconds_bucket{') && k.includes('le="+Inf"'));
  let p99: number | null = null;
  for (const le of [...les].filter((l) => l !== '+Inf').sort((a, b) => Number(a) - Number(b))) {
    const n = sumDelta((k) => k.startsWith('xks_request_duration_seconds_bucket{') && k.includes(`le="${le}"`));
    const share = inf > 0 ? n / inf : 0;
    within[String(Number(le) * 1000)] = Math.round(share * 10000) / 10000;
    if (p99 === null && share >= 0.99) p99 = Number(le) * 1000;
  }
  return {
    eventLoopLagMs: {
      min: one('nodejs_eventloop_lag_min_seconds'),
      mean: one('nodejs_eventloop_lag_mean_seconds'),
      p99: one('nodejs_eventloop_lag_p99_seconds'),
      max: one('nodejs_eventloop_lag_max_seconds'),
    },
    stallMaxMs: Math.round((one('nodejs_eventloop_lag_max_seconds') - one('nodejs_eventloop_lag_min_seconds')) * 100) / 100,
    withinMs: within,
    p99AtMostMs: p99,
    gcMs: Math.round(sumDelta((k) => k.startsWith('nodejs_gc_duration_seconds_sum')) * 1000),
  };
}
