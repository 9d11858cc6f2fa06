/**
 * Open-loop steps of `--mode overload` over plain HTTP: the generator of bench/lib/open-loop-worker.ts on
 * a thread of its own, measured by measureRun like an autocannon run, so that the step's tables, JSON and
 * verdict read the same. This side turns the signed pool into request bytes, forwards the thread's
 * answers to the run's hooks, and hands the thread fresh signatures while a step lasts.
 *
 * Why not autocannon here: at 800 connections it used most of a core to send 60-85% of the offer at 1x
 * capacity, and each of its connections is a closed loop that cannot send while its last request is
 * unanswered or unread (the proxy's read gate pauses connections under load): the steps measured the
 * load generator, not the proxy (bench/README.md, "Figures (issue 22)").
 */
import { Worker } from 'node:worker_threads';
import { measureRun, RunStats, type LoadSpec } from './load';
import type { FromGenerator, GeneratorDone, GeneratorSpec, ToGenerator } from './open-loop-worker';
import { libJs } from './paths';
import type { SignedPool, WireRequest } from './workload';

/** autocannon's per-request timeout, kept so that `timeouts` means the same in both generators. */
const TIMEOUT_MS = 10_000;
/** Fresh signatures this often: the pool re-signs entries older than 60 s, the proxy accepts 5 minutes. */
const RESIGN_EVERY_MS = 60_000;

/** The exact HTTP/1.1 bytes of a signed request (aws4 has set Host and Content-Length among its headers). */
function wireBytes(r: WireRequest): Buffer {
  let head = `${r.method} ${r.path} HTTP/1.1\r\n`;
  let length = false;
  for (const [name, value] of Object.entries(r.headers)) {
    head += `${name}: ${value}\r\n`;
    length ||= name.toLowerCase() === 'content-length';
  }
  const body = Buffer.from(r.body, 'utf8');
  if (!length) head += `content-length: ${body.length}\r\n`;
  return Buffer.concat([Buffer.from(`${head}\r\n`, 'latin1'), body]);
}

/** The pool's current requests as bytes, one per entry (re-signing those that are due). */
const snapshot = (pool: SignedPool): Uint8Array[] => Array.from({ length: pool.size }, () => wireBytes(pool.next()));

/** An open-loop run at `spec.rate` over at most `spec.connections` connections; plain HTTP only (an https target keeps autocannon). */
export async function runOpenLoop(spec: LoadSpec & { rate: number }): Promise<RunStats> {
  if (spec.endpoint.tls) throw new Error('runOpenLoop: plain HTTP only');
  const data: GeneratorSpec = {
    host: spec.endpoint.host,
    port: spec.endpoint.port,
    requests: snapshot(spec.pool),
    rate: spec.rate,
    connections: spec.connections,
    durationS: spec.durationS,
    rampMs: Math.min(spec.rampS ?? 0, spec.durationS / 2) * 1000,
    timeoutMs: TIMEOUT_MS,
  };
  const worker = new Worker(libJs('open-loop-worker.js'), { workerData: data });
  const tell = (m: ToGenerator): void => worker.postMessage(m);
  let failure: Error | undefined;
  worker.on('error', (e) => (failure = new Error(`open-loop generator thread: ${e.message}`)));
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  try {
    // Started before the measurement: the thread's start-up is neither in the run's time nor its CPU.
    await new Promise<void>((resolve, reject) => {
      worker.once('message', () => resolve());
      void exited.then(() => reject(failure ?? new Error('open-loop generator thread exited before it started')));
    });
    return await measureRun(spec, async (record) => {
      const resign = setInterval(() => tell({ requests: snapshot(spec.pool) }), RESIGN_EVERY_MS);
      try {
        const done = await new Promise<GeneratorDone>((resolve, reject) => {
          worker.on('message', (m: FromGenerator) => {
            if (typeof m !== 'object') return;
            if ('done' in m) return resolve(m.done);
            const a = m.answers;
            for (let i = 0; i < a.length; i += 3) record(a[i] as number, a[i + 1] as number, a[i + 2] as number);
          });
          void exited.then(() => reject(failure ?? new Error('open-loop generator thread exited without results')));
          tell('go');
        });
        return {
          durationS: done.durationS,
          sent: done.stats.written,
          non2xx: done.non2xx,
          errors: done.errors,
          timeouts: done.timeouts,
          resets: done.stats.socketErrors.ECONNRESET ?? 0,
          late: done.late,
          errorNames: done.errorNames,
          errorSamples: done.errorSamples,
          autocannonP99Ms: null,
          openLoop: done.stats,
        };
      } finally {
        clearInterval(resign);
      }
    });
  } finally {
    await worker.terminate();
  }
}
