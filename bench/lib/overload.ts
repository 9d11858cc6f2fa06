/**
 * Overload: the proxy's capacity, then fixed multiples of it offered open-loop, judged the way KMS
 * judges a proxy. Per step: goodput (200s within KMS's 250 ms per second), what was shed (429) and how
 * fast, what timed out (503), everything else, what /readyz and GetHealthStatus answered meanwhile, and
 * the proxy's memory. Also the side samplers (probes, RSS) the hostile mode uses.
 *
 * Open loop: each step offers its rate whatever the answers take, over enough connections that a
 * connection is rarely still waiting when its next slot comes (rate x 300 ms by default: KMS gives up
 * after 250 ms, so a proxy that keeps within the deadline never has more in flight). `late` says how often
 * the schedule slipped anyway; then the offered rate was not fully offered and `sentRate` shows it.
 */
import http from 'node:http';
import https from 'node:https';
import { performance } from 'node:perf_hooks';
import { KMS_TIMEOUT_MS, RunStats } from './load';
import { treeRssBytes } from './processes';
import type { Endpoint, Payload } from './workload';

/**
 * The bar (issue 22): at 3x capacity, at least 70% of capacity is still answered 200 within KMS's
 * deadline as the client measures it, with /readyz and /healthz on the ops port answered 200 throughout
 * (against a deployed proxy, whose ops port the bench does not reach: /healthz on the XKS port). (Issue
 * 11's bar also wanted the excess refused with 429 in a few ms; where the proxy's CPU is the bottleneck
 * a refusal costs too much for that, so the proxy stops reading instead: see bench/README.md.)
 */
export const GOODPUT_BAR = 0.7;
export const BAR_MULTIPLE = 3;
/** How often readiness, health and memory are sampled during a step. */
const SAMPLE_EVERY_MS = 200;

interface Dist {
  n: number;
  p50: number;
  p99: number;
  max: number;
}

function dist(list: number[]): Dist {
  const s = Float64Array.from(list).sort();
  const at = (q: number): number => (s.length ? Math.round((s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)] as number) * 100) / 100 : 0);
  return { n: s.length, p50: at(0.5), p99: at(0.99), max: at(1) };
}

/** Answers by HTTP status, latencies kept, from `fromMs` into the run on (the ramp left out). */
export class StatusCollector {
  private readonly byStatus = new Map<number, number[]>();
  /** Every answer by status, the ramp included: the server's CPU is measured over the whole run too. */
  private readonly all = new Map<number, number>();
  constructor(private readonly fromMs = 0) {}
  readonly push = (status: number, ms: number, atMs: number): void => {
    this.all.set(status, (this.all.get(status) ?? 0) + 1);
    if (atMs < this.fromMs) return;
    let l = this.byStatus.get(status);
    if (!l) this.byStatus.set(status, (l = []));
    l.push(ms);
  };
  latencies(status: number): number[] {
    return this.byStatus.get(status) ?? [];
  }
  /** 200s within KMS's deadline. */
  good(): number {
    return this.latencies(200).filter((ms) => ms <= KMS_TIMEOUT_MS).length;
  }
  counts(): Record<string, number> {
    return Object.fromEntries([...this.byStatus].map(([s, l]) => [String(s), l.length]));
  }
  total(): number {
    let n = 0;
    for (const l of this.byStatus.values()) n += l.length;
    return n;
  }
  /** Answers with `status` over the whole run, ramp included. */
  countAll(status: number): number {
    return this.all.get(status) ?? 0;
  }
  totalAll(): number {
    let n = 0;
    for (const v of this.all.values()) n += v;
    return n;
  }
}

/** What refusing costs the proxy, from its CPU over a step (see bench/README.md, "The cost of a refusal"). */
interface RefusalCost {
  /** Server CPU per served request (µs), and where it was measured ("capacity", or "0.3x step" with --capacity). */
  servedUs: number;
  servedUsFrom: string;
  /** Server CPU seconds of the step, and its 200 and 429 answers, all over the whole run (ramp included). */
  serverS: number;
  served: number;
  refused: number;
  /** (serverS - served x servedUs) / refused, µs; null without 429s. Other answers (503s) are charged to the 429s. */
  usPer429: number | null;
  /** usPer429 / servedUs. */
  cost: number | null;
  /** Goodput bound at this step's multiple, as a share of capacity, for any admission policy (goodputBound). */
  bound: number | null;
  /** The same at the multiple actually sent (sentRate / capacity), when the load generator fell short of the offer. */
  boundAtSent: number | null;
}

/**
 * Open-loop bound on goodput when every offered request must at least be read and refused: with capacity C
 * at c µs per served request and r µs per refusal, G·c + (m·C − G)·r ≤ C·c, so G/C ≤ (1 − m·x)/(1 − x)
 * with x = r/c; never above min(1, m), and 0 when negative (the proxy cannot even read all it is offered).
 */
export function goodputBound(multiple: number, x: number): number {
  const cap = Math.min(1, multiple);
  if (multiple <= 1) return cap;
  const r = Math.max(0, x);
  if (r >= 1) return 0;
  return Math.max(0, Math.min(cap, (1 - multiple * r) / (1 - r)));
}

function refusalCost(multiple: number, sentMultiple: number, run: RunStats, c: StatusCollector, price: { us: number; from: string } | undefined): RefusalCost | null {
  if (!price || !(price.us > 0) || !(run.cpu?.serverS > 0)) return null;
  const servedUs = price.us;
  const served = c.countAll(200);
  const refused = c.countAll(429);
  const usPer429 = refused > 0 ? Math.round((run.cpu.serverS * 1e6 - served * servedUs) / refused) : null;
  const cost = usPer429 === null ? null : Math.round((usPer429 / servedUs) * 1000) / 1000;
  const bound = (m: number): number | null => (cost === null ? null : Math.round(goodputBound(m, cost) * 1000) / 1000);
  return { servedUs, servedUsFrom: price.from, serverS: run.cpu.serverS, served, refused, usPer429, cost, bound: bound(multiple), boundAtSent: bound(Math.round(sentMultiple * 100) / 100) };
}

export interface ProbeStats {
  /** Probes sent (one every SAMPLE_EVERY_MS). */
  sent: number;
  /** Share of probes answered 200 within the probe timeout. */
  okShare: number;
  /** Answers by status; "timeout" and "error" for none. */
  answers: Record<string, number>;
  latencyMs: Dist;
}

/** Calls `probe` every SAMPLE_EVERY_MS without waiting for the previous one (a slow answer is a finding, not a pause). */
export function sampleProbe(probe: () => Promise<string>): { stop: () => Promise<ProbeStats> } {
  const answers: Record<string, number> = {};
  const lat: number[] = [];
  const pending = new Set<Promise<void>>();
  let sent = 0;
  const fire = (): void => {
    sent++;
    const t0 = performance.now();
    const p: Promise<void> = probe()
      .catch(() => 'error')
      .then((a) => {
        answers[a] = (answers[a] ?? 0) + 1;
        if (/^\d+$/.test(a)) lat.push(performance.now() - t0);
      })
      .finally(() => pending.delete(p));
    pending.add(p);
  };
  fire();
  const timer = setInterval(fire, SAMPLE_EVERY_MS);
  return {
    stop: async () => {
      clearInterval(timer);
      await Promise.all([...pending]);
      return { sent, okShare: sent ? Math.round(((answers['200'] ?? 0) / sent) * 1000) / 1000 : 0, answers, latencyMs: dist(lat) };
    },
  };
}

/** GET on the ops port, as a kubelet probe would (1 s timeout, its default). */
export function opsProbe(port: number, path: string, timeoutMs = 1000): () => Promise<string> {
  return getProbe({ host: '127.0.0.1', port }, path, timeoutMs);
}

/** GET on a new connection each time (over TLS when the endpoint has it), as a load balancer's target check. */
export function getProbe(to: { host: string; port: number; tls?: Endpoint['tls'] }, path: string, timeoutMs = 1000): () => Promise<string> {
  const get = to.tls ? https.get : http.get;
  return () =>
    new Promise((resolve) => {
      const req = get({ host: to.host, port: to.port, path, agent: false, timeout: timeoutMs, ...to.tls }, (res) => {
        res.resume();
        res.on('end', () => resolve(String(res.statusCode)));
      });
      req.on('timeout', () => {
        req.destroy();
        resolve('timeout');
      });
      req.on('error', () => resolve('error'));
    });
}

export interface RssStats {
  startMB: number;
  peakMB: number;
  endMB: number;
}

/** The proxy's resident memory (process tree) every SAMPLE_EVERY_MS. */
export function sampleRss(pid: number): { stop: () => RssStats } {
  const mb = (b: number): number => Math.round(b / 1024 / 102.4) / 10;
  const start = treeRssBytes(pid);
  let peak = start;
  const timer = setInterval(() => (peak = Math.max(peak, treeRssBytes(pid))), SAMPLE_EVERY_MS);
  return {
    stop: () => {
      clearInterval(timer);
      const end = treeRssBytes(pid);
      return { startMB: mb(start), peakMB: mb(Math.max(peak, end)), endMB: mb(end) };
    },
  };
}

export interface OverloadStep {
  payload: Payload;
  multiple: number;
  capacity: number;
  offeredRate: number;
  connections: number;
  /** Seconds measured (after the ramp). */
  measuredS: number;
  /** Answers and failed requests per second: below offeredRate when the load generator could not keep up. */
  sentRate: number;
  /** 200s within KMS_TIMEOUT_MS per second. */
  goodput: number;
  /** goodput / capacity. */
  goodputShare: number;
  ok: Dist;
  /** 429 ThrottlingException answers. */
  shed: Dist;
  /** 503 answers (DependencyTimeoutException and other unavailability). */
  unavailable: Dist;
  /** Other non-200 answers by status, and requests without an answer (socket errors, 10 s timeouts). */
  otherStatus: Record<string, number>;
  errors: number;
  timeouts: number;
  errorNames: Record<string, number>;
  late: number;
  readyz: ProbeStats | null;
  /** GET /healthz on the ops port; null against a deployed proxy, and in results from before it was probed. */
  opsHealthz: ProbeStats | null;
  /** GET /healthz on the XKS port; null in results of builds before it was probed. */
  healthz: ProbeStats | null;
  health: ProbeStats;
  rss: RssStats | null;
  /** What the step's 429s cost the proxy (local proxy with a price for a served request; else null). */
  refusal: RefusalCost | null;
  /** The whole run as the other modes report it. */
  run: RunStats;
}

export function overloadStep(
  base: { payload: Payload; multiple: number; capacity: number; offeredRate: number },
  run: RunStats,
  c: StatusCollector,
  probes: { readyz: ProbeStats | null; opsHealthz: ProbeStats | null; healthz: ProbeStats | null; health: ProbeStats },
  rss: RssStats | null,
  /** Server CPU per served request (µs) and where it was measured, to price the refusals. */
  served?: { us: number; from: string },
): OverloadStep {
  const measuredS = Math.max(0.001, run.durationS - run.rampS);
  const goodput = Math.round(c.good() / measuredS);
  const sentRate = Math.round((c.total() + run.errors + run.timeouts) / measuredS);
  const other: Record<string, number> = {};
  for (const [s, n] of Object.entries(c.counts())) if (s !== '200' && s !== '429' && s !== '503') other[s] = n;
  return {
    ...base,
    connections: run.connections,
    measuredS: Math.round(measuredS * 100) / 100,
    sentRate,
    goodput,
    goodputShare: base.capacity > 0 ? Math.round((goodput / base.capacity) * 1000) / 1000 : 0,
    ok: dist(c.latencies(200)),
    shed: dist(c.latencies(429)),
    unavailable: dist(c.latencies(503)),
    otherStatus: other,
    errors: run.errors,
    timeouts: run.timeouts,
    errorNames: run.errorNames,
    late: run.late,
    readyz: probes.readyz,
    opsHealthz: probes.opsHealthz,
    healthz: probes.healthz,
    health: probes.health,
    rss,
    refusal: refusalCost(base.multiple, base.capacity > 0 ? sentRate / base.capacity : 0, run, c, served),
    run,
  };
}

export interface Verdict {
  payload: Payload;
  /** The step judged: BAR_MULTIPLE x capacity, or the nearest above it; none when no step reached it. */
  step?: OverloadStep;
  pass: boolean;
  line: string;
}

/** The bar, per payload: goodput at 3x capacity (or the nearest multiple above), readiness throughout. */
export function verdict(payload: Payload, steps: OverloadStep[]): Verdict {
  const step = steps.filter((s) => s.payload === payload && s.multiple >= BAR_MULTIPLE).sort((a, b) => a.multiple - b.multiple)[0];
  if (!step) return { payload, pass: false, line: `verdict ${payload}: no step at >= ${BAR_MULTIPLE}x capacity, nothing to judge (add ${BAR_MULTIPLE} to --multiples)` };
  const problems = judge(step);
  const note = shortfall(step);
  const at = step.offeredRate > 0 ? `${step.multiple}x capacity (${step.offeredRate} req/s offered, ${step.sentRate}/s sent)` : `${step.connections} connections (${step.multiple}x the capacity's, closed loop, ${step.sentRate}/s sent)`;
  const r = step.refusal;
  const bound = r?.cost != null && r.bound != null && step.offeredRate > 0 ? `; ${boundText(step.multiple, step.sentRate / step.capacity, r)}` : '';
  const refused = step.shed.n > 0 ? `, ${step.shed.n} x 429 (p50 ${step.shed.p50} ms)` : '';
  return problems.length
    ? { payload, step, pass: false, line: `verdict ${payload}: FAIL at ${at}: ${problems.join('; ')}${note}${bound}` }
    : { payload, step, pass: true, line: `verdict ${payload}: PASS at ${at}: goodput ${step.goodput}/s = ${(step.goodputShare * 100).toFixed(0)}% of capacity${refused}, ${readinessText(step)}${note}${bound}` };
}

/** What a PASS says of readiness: the judged probes, and the XKS port's /healthz when it is only reported. */
function readinessText(step: OverloadStep): string {
  if (step.readyz === null && step.opsHealthz === null) return 'XKS-port /healthz 200 throughout';
  const xks = step.healthz && step.healthz.okShare < 1 ? ` (XKS-port /healthz, reported not judged: 200 to ${(step.healthz.okShare * 100).toFixed(1)}%)` : '';
  return `ops /readyz and /healthz 200 throughout${xks}`;
}

/**
 * Why fewer requests were sent than offered, when they were: a note, not a verdict. Slow answers hold
 * connections, so a proxy that queues makes the schedule slip too; so does a load generator short of CPU.
 */
function shortfall(step: OverloadStep): string {
  const g = step.run.openLoop;
  const behind = g && (g.unsentAtEnd > 0 || g.sendLagMs.p99 > 10) ? `the load generator fell behind its schedule (send lag p99 ${g.sendLagMs.p99} ms, ${g.unsentAtEnd} sends due but not made at the end, its thread at ${g.threadPct ?? '-'}% CPU)` : '';
  if (step.late <= step.run.requests * 0.01) return behind ? ` (note: ${behind})` : '';
  const why = g ? `${step.late} sends found all ${step.connections} connections busy and were dropped` : `the schedule slipped ${step.late} times: answers held connections too long, or the load generator lacked CPU`;
  return ` (note: only ${step.sentRate}/s were sent: ${why}${behind ? `; ${behind}` : ''})`;
}

/**
 * What misses the bar in one step: goodput, and any judged readiness probe not answered 200: /readyz and
 * /healthz on the ops port (the issue's words: what a kubelet asks); the XKS port's /healthz only where
 * there is no ops port to ask (a deployed proxy), else it is reported, not judged.
 */
function judge(step: OverloadStep): string[] {
  const problems: string[] = [];
  if (step.goodput < GOODPUT_BAR * step.capacity) problems.push(`goodput ${step.goodput}/s is ${(step.goodputShare * 100).toFixed(0)}% of capacity ${step.capacity}/s (bar ${GOODPUT_BAR * 100}%)`);
  const ops = step.readyz !== null || step.opsHealthz !== null;
  const judged = ops ? ([['ops /readyz', step.readyz], ['ops /healthz', step.opsHealthz]] as const) : ([['XKS-port /healthz', step.healthz]] as const);
  for (const [name, probe] of judged) {
    if (probe && probe.okShare < 1) problems.push(`${name} answered 200 to ${(probe.okShare * 100).toFixed(1)}% of probes (${JSON.stringify(probe.answers)})`);
  }
  return problems;
}

/** "a refusal costs 31% of a served request; at 3x offered open loop that bounds goodput at 14% of capacity ..." */
function boundText(multiple: number, sentMultiple: number, r: RefusalCost): string {
  const pct = (v: number): string => `${Math.round(v * 100)}%`;
  const cost = `a refusal costs ${pct(r.cost ?? 0)} of a served request (${r.usPer429} us against ${r.servedUs} us per served request, from the ${r.servedUsFrom})`;
  const offered =
    (r.bound ?? 0) > 0
      ? `at ${multiple}x offered open loop that bounds goodput at ${pct(r.bound ?? 0)} of capacity whatever the admission policy`
      : `at ${multiple}x offered open loop the proxy cannot even read and refuse all it is offered (${multiple} x ${pct(r.cost ?? 0)} = ${pct(multiple * (r.cost ?? 0))} of its CPU at capacity), so no admission policy keeps any goodput`;
  // The load generator may fall short of the offer (its CPU): then the bound at what was sent applies too.
  const sent = r.boundAtSent !== null && sentMultiple < multiple * 0.95 ? `; at the ${sentMultiple.toFixed(1)}x actually sent: ${pct(r.boundAtSent)}` : '';
  return `${cost}; ${offered}${sent}`;
}

/** Connections for an open-loop step: rate x 300 ms, within [floor, cap]. */
export function openLoopConnections(rate: number, floor: number, cap: number): number {
  return Math.max(1, Math.min(cap, Math.max(floor, Math.ceil(rate * 0.3))));
}
