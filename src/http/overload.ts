import { XksError } from '../errors';
import { isEngineError } from '../engine/errors';
import type { Metrics } from '../metrics';
import type { Deadline } from '../deadline';
import type { PreAuthenticated, Routed } from './context';
import { declaresMoreThan, readBody } from './reply';

export type ShedReason = 'hsm_wait' | 'event_loop';

export interface OverloadOptions {
  /**
   * Event-loop delay that counts as a queue (CoDel's target). The proxy passes half its deadline
   * (100 ms by default; src/app.ts). At 20 ms a loaded machine's scheduling delay alone (a process
   * waiting for a CPU, a throttled cgroup) shed a cold replica's first requests in the tests, and at
   * 50 ms a one-second CPU spike from an admin command next to the proxy shed hundreds of requests
   * that would still have been answered well within their deadline (the soak).
   */
  targetMs?: number;
  /** How long the delay must stay above target to be a standing queue, not a burst (CoDel's interval). */
  intervalMs?: number;
  /** Timer period of the sampler. */
  sampleMs?: number;
  /** A shed this recent still reports the proxy as overloaded in readiness. */
  reportForMs?: number;
}

/**
 * Overload as the proxy itself sees it, kept apart from HSM health.
 *
 * The session pool sheds what cannot wait for an HSM session (src/engine/session-pool.ts); this covers
 * the other queue, the event loop's. With inline PKCS#11 calls (`hsm.asyncCalls: false`) or CPU-bound
 * work the pool never fills: requests wait in socket buffers instead, where no deadline sees them.
 * A timer's drift measures that wait. Following CoDel, a burst is fine and only a standing queue
 * counts: overloaded once every sample for `intervalMs` (and at least two) was later than `targetMs`;
 * one sample on time ends it. While overloaded, new key operations get 429 ThrottlingException before
 * their signature is computed or their body parsed (shedOnEventLoopOverload).
 */
export class OverloadGuard {
  private readonly targetMs: number;
  private readonly intervalMs: number;
  private readonly sampleMs: number;
  private readonly reportForMs: number;
  private timer: NodeJS.Timeout | undefined;
  /** performance.now() when the current run of late samples began (the first late timer was due), or undefined. */
  private lateSince: number | undefined;
  private lateSamples = 0;
  private standing = false;
  private lastShed = -Infinity;
  /**
   * When the sampler's next timer is due. Node runs every ready socket's callbacks in one loop turn, so
   * with slow synchronous work per request (inline HSM calls) a single turn can last seconds while the
   * timer, run only between turns, sees one late sample and then an on-time one. How late the pending
   * timer is right now is how long the turn has kept everything behind it waiting.
   */
  private due = performance.now();
  /** Called with every sample's lateness (ms): the read gate adjusts to it. */
  private readonly watchers: ((lateMs: number) => void)[] = [];

  constructor(
    private readonly metrics?: Metrics,
    opts: OverloadOptions = {},
  ) {
    this.targetMs = opts.targetMs ?? 50;
    this.intervalMs = opts.intervalMs ?? 100;
    this.sampleMs = opts.sampleMs ?? 10;
    this.reportForMs = opts.reportForMs ?? 1000;
  }

  start(): void {
    if (this.timer) return;
    const arm = (): void => {
      const due = performance.now() + this.sampleMs;
      this.due = due;
      this.timer = setTimeout(() => {
        this.sample(performance.now() - due, due);
        arm();
      }, this.sampleMs);
      this.timer.unref();
    };
    arm();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** One timer observation: it fired `lateMs` after `due`. Public for tests, which feed it by hand. */
  sample(lateMs: number, due: number): void {
    for (const w of this.watchers) w(lateMs);
    if (lateMs <= this.targetMs) {
      this.lateSince = undefined;
      this.lateSamples = 0;
      this.standing = false;
      return;
    }
    this.lateSince ??= due;
    this.lateSamples++;
    this.standing = this.lateSamples >= 2 && due + lateMs - this.lateSince >= this.intervalMs;
  }

  /** Calls fn with the lateness of every sample (every sampleMs while the loop keeps up, once per loop turn when not). */
  onSample(fn: (lateMs: number) => void): void {
    this.watchers.push(fn);
  }

  /** The sampler's target: how late the loop may run before it counts as behind. */
  get target(): number {
    return this.targetMs;
  }

  /**
   * How far behind the event loop is now: how late the sampler's pending timer is. A request read in
   * this loop turn was waiting in its socket before the turn began (timers run between turns), so, near
   * enough, it has waited at least this long. 0 when the sampler is not running.
   */
  behindMs(now = performance.now()): number {
    return this.timer === undefined ? 0 : Math.max(0, now - this.due);
  }

  /** A standing event-loop queue now, or a loop turn that has already run past the target (see `due`). */
  eventLoopOverloaded(now = performance.now()): boolean {
    return this.standing || (this.timer !== undefined && now - this.due > this.targetMs);
  }

  /** For readiness: shedding now or within the last moment. Never a reason to be unready. */
  overloaded(): boolean {
    return this.standing || performance.now() - this.lastShed < this.reportForMs;
  }

  shed(keyStore: string, reason: ShedReason): void {
    this.lastShed = performance.now();
    this.metrics?.countShed(keyStore, reason);
  }
}

/**
 * A request refused because the proxy is overloaded: a ThrottlingException that knows which queue was
 * full, and what became of the body: read and dropped (the connection stays open), left unread (it
 * closes), or the client left while it was being dropped (no one to answer; it still counts as a shed).
 */
export class Shed extends XksError {
  constructor(
    readonly reason: ShedReason,
    readonly body: 'drained' | 'unread' | 'client-left',
  ) {
    super('ThrottlingException', 'the proxy is overloaded; retry later');
  }
}

/**
 * Pipeline step right after the Authorization header's check (preAuthenticate, which refuses bad
 * headers without reading the body): refuses a key operation while the event loop has a standing
 * queue, before the signature is computed or the body parsed, because under overload every
 * microsecond spent on a refusal is taken from the requests still admitted (a refusal costs about as
 * much as node:http's own handling of a request; anything more is goodput lost). The body is still
 * read and dropped, so that the connection stays open: a client's reconnect (a TLS handshake) costs the
 * loop more than reading a body of at most maxBodyBytes, and only a client whose headers passed gets
 * that far. A client waiting for 100 Continue, or one declaring too large a body, is answered without
 * reading and the connection closes. GetHealthStatus passes, so that KMS's health view reflects the
 * HSM, not load.
 */
export function shedOnEventLoopOverload({ routed }: PreAuthenticated): Promise<never> | undefined {
  const guard = routed.server.overload;
  if (!guard) return undefined;
  // Read from a connection the read gate paused past the deadline (src/http/read-gate.ts): refused unread too.
  const stale = routed.server.gate?.takeStale(routed.req.socket) === true;
  if ((!stale && !guard.eventLoopOverloaded()) || routed.route.operation === 'GetHealthStatus') return undefined;
  guard.shed(routed.keyStore.name, 'event_loop');
  const max = routed.runtime.config.server.maxBodyBytes;
  if (routed.expectsContinue || declaresMoreThan(routed.req, max)) return Promise.reject(new Shed('event_loop', 'unread'));
  return readBody(routed.req, max, false).then(shedAfterDrain, shedClientLeft);
}

const shedAfterDrain = (read: Buffer | null): Promise<never> => Promise.reject(new Shed('event_loop', read === null ? 'unread' : 'drained'));
const shedClientLeft = (): Promise<never> => Promise.reject(new Shed('event_loop', 'client-left'));

/**
 * Counts a request the session pool refused (engine 'busy') as shed. One whose deadline had already
 * passed is not: it is answered DependencyTimeoutException, and counted as that.
 */
export function noteHsmShed(routed: Routed, deadline: Deadline, e: unknown): void {
  if (isEngineError(e) && e.kind === 'busy' && !deadline.expired) routed.server.overload?.shed(routed.keyStore.name, 'hsm_wait');
}
