/**
 * The open-loop generator's thread (started by bench/lib/open-loop.ts). Requests leave on a fixed
 * schedule, `rate` a second evenly spaced, whatever the answers take: each goes out on a free keep-alive
 * connection, or a new one while fewer than `connections` are open; a send that finds neither is dropped
 * and counted (`noConnection`). Latency runs from the scheduled send, so the generator's own lag counts
 * against it rather than hiding the server's. Raw node:net sockets, requests written as prepared bytes,
 * answers read by ResponseReader: a few µs a request, where autocannon's per-connection machinery
 * (a request builder, an HTTP parser and its events per connection) cost the generator the CPU it needed
 * to keep its schedule at 800 connections.
 *
 * Protocol: workerData is a GeneratorSpec (its requests carry signatures: never log them); the thread
 * posts 'ready', starts on 'go', posts batches of answers as { answers } (a Float64Array of (status,
 * ms, atMs) triples), takes fresh requests as { requests }, and ends with { done: GeneratorDone }.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { threadCpuSeconds } from './processes';
import { Answer, ResponseReader } from './response-reader';
import { errorNameOf } from './workload';

export interface GeneratorSpec {
  host: string;
  port: number;
  /** Whole HTTP/1.1 requests, handed out round-robin. */
  requests: Uint8Array[];
  rate: number;
  /** Most connections open at once. */
  connections: number;
  durationS: number;
  /** Failures before this many ms into the run are not counted (answers are sent on, with their times). */
  rampMs: number;
  /** A request unanswered this long is a timeout; its connection is closed. */
  timeoutMs: number;
}

/** What the generator saw besides the answers (RunStats.openLoop). */
export interface OpenLoopStats {
  /** Sends due in the run (rate x duration). */
  scheduled: number;
  /** Requests written. */
  written: number;
  /** Sends dropped because every connection was busy and `connections` were open (whole run; `late` counts those after the ramp). */
  noConnection: number;
  /** Sends due but not made when the run ended: the generator was behind its own schedule (its CPU). */
  unsentAtEnd: number;
  /** How long after its scheduled time each send left (the generator's lag), ms. */
  sendLagMs: { p50: number; p99: number; max: number };
  /** Connections opened; most open at once; closed by the server (Connection: close, or its FIN). */
  opened: number;
  maxOpen: number;
  closedByServer: number;
  /** Socket errors by code (ECONNRESET, EPIPE, ...; EPROTO: an answer the reader could not parse). */
  socketErrors: Record<string, number>;
  /** CPU of the generator's thread alone, % of one core; null without /proc/thread-self. */
  threadPct: number | null;
}

export interface GeneratorDone {
  durationS: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  late: number;
  errorNames: Record<string, number>;
  errorSamples: string[];
  stats: OpenLoopStats;
}

export type FromGenerator = 'ready' | { answers: Float64Array } | { done: GeneratorDone };
export type ToGenerator = 'go' | { requests: Uint8Array[] };

/** Answers are posted in batches: a message per answer would cost more than reading it. */
const BATCH = 3 * 2048;
const FLUSH_EVERY_MS = 50;
/** Sends per turn of the event loop when behind: answers are read in between. */
const MOST_PER_TURN = 512;

interface Conn {
  socket: net.Socket;
  reader: ResponseReader;
  /** Scheduled time of the request in flight (ms into the run), -1 when none. */
  sched: number;
  /** Closed or closing: skipped when found on the free list. */
  dead: boolean;
}

function quantile(sorted: Float64Array, q: number): number {
  return sorted.length ? Math.round((sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number) * 100) / 100 : 0;
}

function run(spec: GeneratorSpec, post: (m: FromGenerator, transfer?: ArrayBuffer[]) => void, onRequests: (set: (r: Uint8Array[]) => void) => void): void {
  let requests = spec.requests;
  onRequests((r) => (requests = r));
  const interval = 1000 / spec.rate;
  const durationMs = spec.durationS * 1000;
  const t0 = performance.now();
  const cpu0 = threadCpuSeconds();
  const free: Conn[] = []; // LIFO: the most recently answered connection goes next, the rest idle
  const conns = new Set<Conn>();
  let due = 0;
  let cursor = 0;
  let stopping = false;
  let batch = new Float64Array(BATCH);
  let filled = 0;
  let lags = new Float64Array(1 << 16);
  let lagN = 0;
  const d: Omit<GeneratorDone, 'stats' | 'durationS'> = { errors: 0, timeouts: 0, non2xx: 0, late: 0, errorNames: {}, errorSamples: [] };
  const s = { written: 0, noConnection: 0, opened: 0, maxOpen: 0, closedByServer: 0, socketErrors: {} as Record<string, number> };

  const flush = (): void => {
    if (filled === 0) return;
    const out = filled === BATCH ? batch : batch.slice(0, filled);
    post({ answers: out }, [out.buffer]);
    batch = new Float64Array(BATCH);
    filled = 0;
  };
  const answered = (status: number, ms: number, at: number): void => {
    batch[filled++] = status;
    batch[filled++] = ms;
    batch[filled++] = at;
    if (filled === BATCH) flush();
  };
  const failed = (at: number, kind: 'errors' | 'timeouts'): void => {
    if (at >= spec.rampMs) d[kind]++;
  };

  const connect = (): Conn => {
    const socket = net.connect({ host: spec.host, port: spec.port, noDelay: true });
    const c: Conn = { socket, reader: new ResponseReader(), sched: -1, dead: false };
    conns.add(c);
    s.opened++;
    s.maxOpen = Math.max(s.maxOpen, conns.size);
    const onAnswer = (a: Answer): void => {
      const now = performance.now() - t0;
      if (c.sched < 0) throw new Error('an answer to no request');
      answered(a.status, now - c.sched, now);
      c.sched = -1;
      if (a.body) {
        d.non2xx++;
        const text = a.body.toString('utf8');
        const name = errorNameOf(a.status, text);
        d.errorNames[name] = (d.errorNames[name] ?? 0) + 1;
        if (d.errorSamples.length < 5) d.errorSamples.push(`${a.status} ${text.slice(0, 300)}`);
      }
      if (a.close) {
        s.closedByServer++;
        c.dead = true;
        socket.destroy();
      } else if (!c.dead) free.push(c);
    };
    socket.on('data', (chunk: Buffer) => {
      try {
        c.reader.feed(chunk, onAnswer);
      } catch {
        s.socketErrors.EPROTO = (s.socketErrors.EPROTO ?? 0) + 1;
        socket.destroy();
      }
    });
    socket.on('end', () => {
      if (!c.dead) s.closedByServer++;
      c.dead = true;
      try {
        c.reader.end(onAnswer);
      } catch {
        /* counted as a failed request at 'close' */
      }
    });
    socket.on('error', (e: NodeJS.ErrnoException) => {
      const code = e.code ?? 'error';
      s.socketErrors[code] = (s.socketErrors[code] ?? 0) + 1;
    });
    socket.on('close', () => {
      c.dead = true;
      conns.delete(c);
      if (c.sched >= 0 && !stopping) failed(performance.now() - t0, 'errors');
      c.sched = -1;
    });
    return c;
  };

  const send = (sched: number, now: number): void => {
    if (lagN === lags.length) {
      const more = new Float64Array(lags.length * 2);
      more.set(lags);
      lags = more;
    }
    lags[lagN++] = now - sched;
    let c = free.pop();
    while (c?.dead) c = free.pop();
    if (!c) {
      if (conns.size >= spec.connections) {
        s.noConnection++;
        if (sched >= spec.rampMs) d.late++;
        return;
      }
      c = connect();
    }
    c.sched = sched;
    c.socket.write(requests[cursor] as Uint8Array);
    cursor = cursor + 1 === requests.length ? 0 : cursor + 1;
    s.written++;
  };

  let timer: NodeJS.Timeout | undefined;
  let immediate: NodeJS.Immediate | undefined;
  const tick = (): void => {
    timer = undefined;
    immediate = undefined;
    const now = performance.now() - t0;
    if (now >= durationMs) return stop();
    let budget = MOST_PER_TURN;
    for (let sched = due * interval; sched <= now && budget > 0; sched = due * interval, budget--) {
      send(sched, now);
      due++;
    }
    if (budget === 0) immediate = setImmediate(tick);
    else timer = setTimeout(tick, Math.max(0, Math.min(due * interval, durationMs) - (performance.now() - t0)));
  };

  const sweep = setInterval(() => {
    const now = performance.now() - t0;
    for (const c of conns) {
      if (c.sched >= 0 && now - c.sched > spec.timeoutMs) {
        failed(now, 'timeouts');
        c.sched = -1;
        c.dead = true;
        c.socket.destroy();
      }
    }
  }, 250);
  const flusher = setInterval(flush, FLUSH_EVERY_MS);

  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    clearTimeout(timer);
    clearImmediate(immediate);
    clearInterval(sweep);
    clearInterval(flusher);
    const wallMs = performance.now() - t0;
    const cpu1 = threadCpuSeconds();
    for (const c of conns) c.socket.destroy();
    flush();
    const sorted = lags.subarray(0, lagN).sort();
    const scheduled = Math.ceil(durationMs / interval);
    post({
      done: {
        ...d,
        durationS: Math.round(wallMs) / 1000,
        stats: {
          scheduled,
          ...s,
          unsentAtEnd: Math.max(0, scheduled - due),
          sendLagMs: { p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), max: quantile(sorted, 1) },
          threadPct: cpu0 !== null && cpu1 !== null ? Math.round(((cpu1 - cpu0) / (wallMs / 1000)) * 1000) / 10 : null,
        },
      },
    });
  };

  tick();
}

if (!isMainThread && parentPort) {
  const port = parentPort;
  const spec = workerData as GeneratorSpec;
  let setRequests: (r: Uint8Array[]) => void = () => undefined;
  port.on('message', (m: ToGenerator) => {
    if (m === 'go') run(spec, (out, transfer) => port.postMessage(out, transfer), (set) => (setRequests = set));
    else setRequests(m.requests);
  });
  port.postMessage('ready' satisfies FromGenerator);
}
