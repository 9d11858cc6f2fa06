/**
 * The two stress modes of bench/run.ts, past the happy path: `overload` (capacity, then multiples of
 * it, open loop) and `hostile` (the valid mix at a fixed rate, alone and then with hostile traffic on
 * top). They only speak HTTP to the proxy, plus /proc for its memory when it runs locally.
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { HOSTILE_KEY_ID, HostileTraffic } from './hostile';
import { Pacing, runLoad, RunStats } from './load';
import { runOpenLoop } from './open-loop';
import {
  openLoopConnections,
  OverloadStep,
  overloadStep,
  ProbeStats,
  sampleRss,
  StatusCollector,
} from './overload';
import { startProbes } from './probe-worker';
import type { Growth, HostileResult } from './report';
import { Credential, Endpoint, Keys, makeCiphertexts, Mix, Payload, SignedPool } from './workload';

/** The proxy under test, however it was started. */
export interface StressTarget {
  endpoint: Endpoint;
  basePath: string;
  cred: Credential;
  keys: Keys;
  /** Local proxy: its process tree (memory) and ops port (readiness). */
  pid?: number;
  opsPort?: number;
  /** Local proxy: its log and audit files, whose growth is reported. */
  files?: { log: string; audit?: string };
}

export interface StressOptions {
  mix: Mix;
  pool: number;
  pacing: Pacing;
  warmupS: number;
  rampS: number;
  /** Seconds per measured step. */
  durationS: number;
  note: (msg: string) => void;
}

const pause = (ms = 500): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Readiness, health and memory sampled over one step. The probes run on their own thread (the load
 * generator saturates this one); the memory sampler reads /proc and stays here.
 */
async function samplers(t: StressTarget): Promise<{ stop: () => Promise<{ readyz: ProbeStats | null; opsHealthz: ProbeStats | null; healthz: ProbeStats; health: ProbeStats; rss: ReturnType<ReturnType<typeof sampleRss>['stop']> | null }> }> {
  const probes = await startProbes({ endpoint: t.endpoint, basePath: t.basePath, cred: t.cred, opsPort: t.opsPort });
  const rss = t.pid ? sampleRss(t.pid) : undefined;
  return {
    stop: async () => ({ ...(await probes.stop()), rss: rss ? rss.stop() : null }),
  };
}

async function poolFor(t: StressTarget, o: StressOptions, payload: Payload): Promise<SignedPool> {
  const sealed = await makeCiphertexts(t.endpoint, t.basePath, t.cred, 128, t.keys, payload);
  return new SignedPool(t.endpoint, t.cred, o.mix, o.pool, t.basePath, sealed, t.keys, payload);
}

export interface OverloadOptions extends StressOptions {
  payloads: Payload[];
  multiples: number[];
  /** Known capacity (req/s of 200s within the deadline); measured when absent. */
  capacity?: number;
  /** Closed-loop connection steps of the capacity measurement. */
  capacitySteps: number[];
  capacityStepS: number;
  /** Fewest and most connections of an open-loop step. */
  minConnections: number;
  maxConnections: number;
  /** Who sends the steps over plain HTTP (autocannon always over TLS and with --pacing burst). */
  generator: 'open-loop' | 'autocannon';
}

interface CapacityStep {
  connections: number;
  goodput: number;
  rps: number;
  p99: number;
  /** Server CPU per answer, µs (local proxy; null against a deployed one). */
  usPerReq: number | null;
}

export interface OverloadResult {
  capacity: Record<string, Capacity>;
  steps: OverloadStep[];
}

interface Capacity {
  goodput: number;
  measured: CapacityStep[] | null;
  /**
   * Server CPU per served request, µs: the best capacity step's, or with --capacity the first step that
   * was nearly all 200s; null when neither exists or the proxy is not local. It prices the refusals.
   */
  servedUs: number | null;
  servedUsFrom: string | null;
}

/**
 * Capacity: closed-loop connection steps, each connection sending its next request when the previous
 * answer arrives; capacity is the best step's 200s within the deadline per second. The ramp stops once
 * that stops growing by 5%, or the answers within the deadline fall off (the proxy is then past its knee).
 */
async function measureCapacity(t: StressTarget, o: OverloadOptions, pool: SignedPool, payload: Payload): Promise<Capacity> {
  const measured: CapacityStep[] = [];
  let best = 0;
  let bestUs: number | null = null;
  for (const connections of o.capacitySteps) {
    const c = new StatusCollector(Math.min(o.rampS, o.capacityStepS / 2) * 1000);
    const run = await runLoad({ label: 'proxy', endpoint: t.endpoint, connections, durationS: o.capacityStepS, pacing: o.pacing, pool, serverPid: t.pid, rampS: o.rampS, onResponse: c.push });
    const goodput = Math.round(c.good() / Math.max(0.001, run.durationS - run.rampS));
    const usPerReq = t.pid && run.cpu.serverUsPerReq > 0 ? run.cpu.serverUsPerReq : null;
    measured.push({ connections, goodput, rps: run.rps, p99: run.latencyMs.p99, usPerReq });
    o.note(`capacity ${payload} ${connections} conns: ${goodput} good/s (${run.rps} req/s, p99 ${run.latencyMs.p99} ms, non2xx ${run.non2xx}${usPerReq ? `, ${usPerReq} us/req` : ''})`);
    await pause();
    const grew = goodput >= best * 1.05;
    if (goodput > best) bestUs = usPerReq;
    best = Math.max(best, goodput);
    if (measured.length > 1 && !grew) break;
  }
  return { goodput: best, measured, servedUs: bestUs, servedUsFrom: bestUs === null ? null : 'capacity measurement' };
}

export async function runOverload(t: StressTarget, o: OverloadOptions): Promise<OverloadResult> {
  const result: OverloadResult = { capacity: {}, steps: [] };
  for (const payload of o.payloads) {
    const pool = await poolFor(t, o, payload);
    o.note(`overload ${payload}: pool of ${pool.size} signed requests`);
    if (o.warmupS > 0) await runLoad({ label: 'proxy', endpoint: t.endpoint, connections: 16, durationS: o.warmupS, pacing: o.pacing, pool });
    const cap: Capacity = o.capacity !== undefined ? { goodput: o.capacity, measured: null, servedUs: null, servedUsFrom: null } : await measureCapacity(t, o, pool, payload);
    result.capacity[payload] = cap;
    if (cap.goodput <= 0) throw new Error(`overload ${payload}: measured capacity is 0 (no 200 within the deadline): see the proxy's log`);
    o.note(`overload ${payload}: capacity ${cap.goodput} req/s${cap.measured ? '' : ' (given)'}`);
    for (const multiple of o.multiples) {
      const offeredRate = Math.max(1, Math.round(cap.goodput * multiple));
      const c = new StatusCollector(Math.min(o.rampS, o.durationS / 2) * 1000);
      const side = await samplers(t);
      // The open-loop generator over plain HTTP; autocannon over TLS (a deployed proxy) and for --pacing burst.
      const generate = t.endpoint.tls || o.pacing === 'burst' || o.generator === 'autocannon' ? runLoad : runOpenLoop;
      const run = await generate({
        label: 'proxy',
        endpoint: t.endpoint,
        connections: openLoopConnections(offeredRate, o.minConnections, o.maxConnections),
        durationS: o.durationS,
        rate: offeredRate,
        pacing: o.pacing,
        pool,
        serverPid: t.pid,
        rampS: o.rampS,
        onResponse: c.push,
      });
      const { rss, ...probes } = await side.stop();
      // A given capacity was not measured: the first step that was (nearly) all 200s prices a served request.
      if (cap.servedUs === null && t.pid && c.countAll(200) >= 0.95 * c.totalAll() && run.cpu.serverUsPerReq > 0) {
        cap.servedUs = run.cpu.serverUsPerReq;
        cap.servedUsFrom = `${multiple}x step`;
      }
      const step = overloadStep({ payload, multiple, capacity: cap.goodput, offeredRate }, run, c, probes, rss, cap.servedUs !== null ? { us: cap.servedUs, from: cap.servedUsFrom ?? '' } : undefined);
      result.steps.push(step);
      o.note(
        `overload ${payload} ${multiple}x (${offeredRate} req/s offered, ${step.sentRate}/s sent, late ${step.late}, ${step.connections} conns, load generator ${run.cpu.loadgenPct}% CPU): goodput ${step.goodput}/s (${Math.round(step.goodputShare * 100)}%), ` +
          `429 ${step.shed.n} (p99 ${step.shed.p99} ms${step.refusal?.usPer429 != null ? `, ${step.refusal.usPer429} us each` : ''}), 503 ${step.unavailable.n}, ok p99 ${step.ok.p99} ms, readyz ${probes.readyz ? probes.readyz.okShare : '-'}, ops healthz ${probes.opsHealthz ? probes.opsHealthz.okShare : '-'}, xks healthz ${probes.healthz.okShare}, health ${probes.health.okShare}`,
      );
      // Let queues drain and sockets close before the next step.
      await pause(1500);
    }
  }
  return result;
}

export interface FloodOptions extends StressOptions {
  payload: Payload;
  /** Closed-loop connections whose goodput is the capacity (200), and of the flood (600). */
  capacityConnections: number;
  floodConnections: number;
}

export interface FloodResult {
  /** The capacity step (multiple 1) and the flood (multiple = flood / capacity connections), closed loop. */
  steps: [OverloadStep, OverloadStep];
}

/**
 * A closed-loop flood: `capacityConnections` connections, each sending its next request the moment its
 * answer arrives, measure capacity (200s within KMS's 250 ms, as the client times them, per second);
 * then `floodConnections` do the same. Each request's latency runs from the moment the client wrote it,
 * so time spent unread in a paused connection's socket buffer counts, as it does for KMS.
 */
export async function runFlood(t: StressTarget, o: FloodOptions): Promise<FloodResult> {
  const pool = await poolFor(t, o, o.payload);
  o.note(`flood ${o.payload}: pool of ${pool.size} signed requests`);
  if (o.warmupS > 0) await runLoad({ label: 'proxy', endpoint: t.endpoint, connections: 16, durationS: o.warmupS, pacing: o.pacing, pool });
  const closedLoop = async (connections: number, capacity: number | undefined): Promise<OverloadStep> => {
    const c = new StatusCollector(Math.min(o.rampS, o.durationS / 2) * 1000);
    const side = await samplers(t);
    const run = await runLoad({ label: 'proxy', endpoint: t.endpoint, connections, durationS: o.durationS, pacing: o.pacing, pool, serverPid: t.pid, rampS: o.rampS, onResponse: c.push });
    const { rss, ...probes } = await side.stop();
    const measuredS = Math.max(0.001, run.durationS - run.rampS);
    const cap = capacity ?? Math.round(c.good() / measuredS);
    const step = overloadStep({ payload: o.payload, multiple: Math.round((connections / o.capacityConnections) * 100) / 100, capacity: cap, offeredRate: 0 }, run, c, probes, rss);
    o.note(
      `flood ${o.payload} ${connections} conns: goodput ${step.goodput}/s (${Math.round(step.goodputShare * 100)}% of ${cap}), 200 p99 ${step.ok.p99} ms, ` +
        `429 ${step.shed.n} (p50 ${step.shed.p50} ms), 503 ${step.unavailable.n}, no answer ${step.errors + step.timeouts}, readyz ${probes.readyz ? probes.readyz.okShare : '-'}, ops healthz ${probes.opsHealthz ? probes.opsHealthz.okShare : '-'}, xks healthz ${probes.healthz.okShare}, health ${probes.health.okShare}`,
    );
    return step;
  };
  const capacity = await closedLoop(o.capacityConnections, undefined);
  if (capacity.goodput <= 0) throw new Error(`flood ${o.payload}: no 200 within the deadline at ${o.capacityConnections} connections: see the proxy's log`);
  await pause(1500);
  const flood = await closedLoop(o.floodConnections, capacity.goodput);
  return { steps: [capacity, flood] };
}

export interface HostileOptions extends StressOptions {
  rate: number;
  connections: number;
  /** Hostile connections per second as a share of `rate`. */
  share: number;
}

/** Bytes and lines appended to a file since `from`. */
function growth(file: string | undefined, from: number): { bytes: number; lines: number; errorLines: number } | null {
  if (!file) return null;
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    return { bytes: 0, lines: 0, errorLines: 0 };
  }
  const bytes = Math.max(0, size - from);
  const buf = Buffer.alloc(bytes);
  const fd = openSync(file, 'r');
  try {
    readSync(fd, buf, 0, bytes, from);
  } finally {
    closeSync(fd);
  }
  const count = (needle: string | number): number => {
    let n = 0;
    for (let i = buf.indexOf(needle); i >= 0; i = buf.indexOf(needle, i + 1)) n++;
    return n;
  };
  // pino's levels: 50 error, 60 fatal (the audit log has no such field, so 0 there).
  return { bytes, lines: count(10), errorLines: count('"level":50') + count('"level":60') };
}

const sizeOf = (file: string | undefined): number => {
  try {
    return file ? statSync(file).size : 0;
  } catch {
    return 0;
  }
};

export async function runHostile(t: StressTarget, o: HostileOptions): Promise<HostileResult> {
  const pool = await poolFor(t, o, 'small');
  if (o.warmupS > 0) await runLoad({ label: 'proxy', endpoint: t.endpoint, connections: 16, durationS: o.warmupS, pacing: o.pacing, pool });
  const step = async (hostile?: HostileTraffic): Promise<{ run: RunStats; g: Growth | null; side: Awaited<ReturnType<Awaited<ReturnType<typeof samplers>>['stop']>> }> => {
    const log0 = sizeOf(t.files?.log);
    const audit0 = sizeOf(t.files?.audit);
    const side = await samplers(t);
    hostile?.start();
    const run = await runLoad({ label: 'proxy', endpoint: t.endpoint, connections: o.connections, durationS: o.durationS, rate: o.rate, pacing: o.pacing, pool, serverPid: t.pid, metricsPort: t.opsPort, rampS: o.rampS });
    const s = await side.stop();
    // The log is written asynchronously: give the last lines a moment before measuring.
    await pause(300);
    const log = growth(t.files?.log, log0);
    const audit = growth(t.files?.audit, audit0);
    const g = log ? { logBytes: log.bytes, logLines: log.lines, logErrorLines: log.errorLines, auditBytes: audit?.bytes ?? null, auditLines: audit?.lines ?? null } : null;
    return { run, g, side: s };
  };
  const calm = await step();
  o.note(`hostile: valid load alone at ${o.rate} req/s: p99 ${calm.run.latencyMs.p99} ms, non2xx ${calm.run.non2xx}, lost ${calm.run.errors + calm.run.timeouts}`);
  await pause(1500);
  const traffic = new HostileTraffic({ endpoint: t.endpoint, basePath: t.basePath, keyId: HOSTILE_KEY_ID, credential: () => t.cred, rate: o.rate * o.share });
  const loaded = await step(traffic);
  const hostile = traffic.stop();
  o.note(`hostile: with ${o.rate * o.share} hostile connections/s on top: p99 ${loaded.run.latencyMs.p99} ms, non2xx ${loaded.run.non2xx}, lost ${loaded.run.errors + loaded.run.timeouts}`);
  return {
    rate: o.rate,
    hostileShare: o.share,
    calm: calm.run,
    loaded: loaded.run,
    validLost: loaded.run.errors + loaded.run.timeouts,
    hostile,
    rss: loaded.side.rss,
    output: calm.g && loaded.g ? { calm: calm.g, loaded: loaded.g } : null,
    readyz: loaded.side.readyz,
    health: loaded.side.health,
  };
}
