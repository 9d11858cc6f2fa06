import type { Socket } from 'node:net';
import type { ProxyEvents } from '../events';

/**
 * Under CPU saturation, the proxy stops reading from connections instead of reading requests only to
 * refuse them.
 *
 * Why: with a fast in-process HSM the proxy's own CPU is the bottleneck, and there a 429 is no way out:
 * reading a request and refusing it costs a quarter to a half of serving it (node:http's parse and the
 * socket writes), so past about twice its capacity a proxy that reads everything spends its CPU on
 * refusals and serves less and less (issue 11). A connection the proxy does not read costs nothing: its
 * bytes wait in the kernel's socket buffer, and its client waits.
 *
 * How: an adaptive limit on the connections being read, driven by the event loop's delay (the queue of a
 * CPU-bound proxy), like TCP's congestion window (additive increase, multiplicative decrease). While the
 * loop keeps up the limit is off. When the loop falls behind for two samples in a row, the limit drops
 * below the number of connections being read, and a connection over it whose answer has just left is
 * paused (socket.pause(): libuv stops reading it) instead of reading its next request. Once the loop
 * keeps up again the limit grows, and paused connections are resumed, the most recently paused first:
 * under a standing overload the connections being served keep being served within the deadline (what
 * KMS measures), while the others wait, rather than every request waiting its turn behind all the others
 * (a closed loop of 600 connections at 2,300 answers a second is 260 ms for each, all past KMS's 250).
 * New connections are always read: a load balancer's health check comes on a new connection.
 *
 * The proxy cannot see how long a request has waited in a paused connection's socket buffer (the
 * client's clock started when it sent; the proxy's starts when it reads). A connection resumed because
 * there is room again is served: a moment of CPU starvation (a neighbour's burst) must not turn into
 * refusals. Under a standing overload, though, the oldest paused connections would wait for as long as it
 * lasts: one paused for `staleAfterMs` (5 deadlines, at least a second) is resumed to have its next request
 * refused unread (429, the body drained, the connection kept). Its client has long given up on that
 * request (KMS after 250 ms), and a refusal costs a fraction of serving. These refusals are rationed to a
 * share of the answers served, so that refusing never again takes the CPU the served requests need; a
 * paused connection waits longer for its 429 when many are paused.
 */
export interface ReadGateOptions {
  /** Event-loop delay (ms) above which the loop counts as behind. */
  targetMs: number;
  /** The limit never goes below this many connections being read. */
  minReading?: number;
  /** A connection paused this long is resumed to have its next request refused unread. */
  staleAfterMs: number;
  /** Refusals of stale connections allowed per answer served (a share of the served rate). */
  staleShare?: number;
  /**
   * server.maxConnections. A paused connection does not see its client close (libuv reads nothing from it,
   * FIN included), so under a standing overload the connections KMS gave up on stay open and count against
   * the cap, until the cap closes new connections (KMS's too) on arrival. Near it, the oldest connections
   * paused past `staleAfterMs` are closed instead: their clients stopped waiting long ago.
   */
  maxConnections?: number;
  /** Where each such close is published ('connection.closedStale'). */
  events?: ProxyEvents;
  /** How far behind the event loop is right now, ms (OverloadGuard.behindMs): an answer in a late loop turn pauses its connection. */
  behind?: () => number;
  now?: () => number;
}

/**
 * A connection with no answer for `staleAfterMs`: an idle keep-alive connection. It is neither read in
 * the limit's sense (the limit is on connections with requests coming) nor paused; its next request
 * makes it a read connection again.
 */
const IDLE = Symbol('idle');

/** A paused connection; current while the gate's map holds this very entry for its socket. */
interface Paused {
  readonly socket: Socket;
  readonly since: number;
}

const DECREASE = 0.8;
const MIN_FACTOR = 0.1;
const INCREASE = 0.1;
/** Stale paused connections are closed once the open ones reach this share of server.maxConnections. */
const CLOSE_AT_SHARE_OF_CAP = 0.9;

export class ReadGate {
  private readonly targetMs: number;
  private readonly minReading: number;
  private readonly staleAfterMs: number;
  private readonly staleShare: number;
  /** Counted connections above which stale paused ones are closed (see maxConnections). */
  private readonly closeAbove: number;
  private readonly events: ProxyEvents | undefined;
  private readonly behind: () => number;
  private readonly now: () => number;
  /** Connections the gate knows: null while read, their entry while paused, IDLE while idle. */
  private readonly states = new Map<Socket, Paused | null | typeof IDLE>();
  /** When each connection last had a request answered (or was opened). */
  private readonly lastAnswer = new WeakMap<Socket, number>();
  /** Paused connections, oldest first: resumed from the end (newest), refused from the start (oldest). */
  private paused: Paused[] = [];
  private pausedFrom = 0;
  /** Connections read (open, not paused, not idle), paused, and idle. */
  private reading = 0;
  private waiting = 0;
  private idle = 0;
  /** The most connections that may be read; Infinity while the event loop keeps up. */
  private limit = Infinity;
  private lateSamples = 0;
  /** Stale refusals earned by answers served, not yet spent. */
  private staleCredit = 0;
  /** Connections resumed only to have their next request refused, and when. */
  private readonly refuseNext = new WeakMap<Socket, number>();

  constructor(opts: ReadGateOptions) {
    this.targetMs = opts.targetMs;
    this.minReading = opts.minReading ?? 2;
    this.staleAfterMs = opts.staleAfterMs;
    this.staleShare = opts.staleShare ?? 0.1;
    this.events = opts.events;
    this.closeAbove = opts.maxConnections === undefined ? Infinity : Math.floor(opts.maxConnections * CLOSE_AT_SHARE_OF_CAP);
    this.behind = opts.behind ?? (() => 0);
    this.now = opts.now ?? (() => performance.now());
  }

  /** A connection's first request: from now on the gate counts it (a connection that never sends costs nothing). */
  opened(socket: Socket): void {
    if (this.states.has(socket)) return;
    this.states.set(socket, null);
    this.lastAnswer.set(socket, this.now());
    this.reading++;
    socket.once('close', () => this.closed(socket));
  }

  /**
   * An answer on this connection has left (its request is done): over the limit, or while this very loop
   * turn has already run late (a burst read all at once, before any sample could lower the limit), the
   * connection is paused before its next request is read. `served`: the answer was a 200 (it earns stale
   * refusals).
   */
  answered(socket: Socket, served: boolean): void {
    if (served) this.staleCredit = Math.min(this.staleCredit + this.staleShare, 64);
    const state = this.states.get(socket);
    if (state === undefined || socket.destroyed) return;
    this.lastAnswer.set(socket, this.now());
    if (state === IDLE) {
      this.states.set(socket, null);
      this.idle--;
      this.reading++;
    } else if (state !== null) {
      // Paused, yet it delivered a request: something resumed it (node:http reading a pipelined request).
      this.markReading(socket);
    }
    if (this.reading > this.limit) {
      this.pause(socket);
    } else if (this.behind() > this.targetMs) {
      // The loop is behind before any sample said so: the limit starts from what is read now, and
      // paused connections come back at its pace, not all at once in the next turn.
      this.limit = Math.max(this.minReading, this.reading - 1);
      this.pause(socket);
    }
  }

  /**
   * Whether this request is to be refused unread: its connection was paused for `staleAfterMs` and
   * resumed to refuse what it had waiting. Asks once per resume; a request that comes later than
   * `staleAfterMs` after the resume was sent after it, and is read as any other.
   */
  takeStale(socket: Socket): boolean {
    const at = this.refuseNext.get(socket);
    if (at === undefined) return false;
    this.refuseNext.delete(socket);
    return this.now() - at <= this.staleAfterMs;
  }

  /**
   * One sample of the event loop's delay (ms): adjusts the limit, then resumes or refuses paused
   * connections. Two late samples in a row (a standing queue, not one descheduled moment) lower the limit
   * in proportion to how late the loop is (a loop turn 4 times too long: a quarter of the connections),
   * at least by a fifth; each sample on time raises it by a tenth.
   */
  sample(lagMs: number): void {
    // Only while the gate is engaged or about to be: idle connections must not count as read, or a few
    // hundred of them (another key store's clients) would make every cut fall on the busy connections.
    if (lagMs > this.targetMs || this.limit !== Infinity) this.markIdle();
    if (lagMs > this.targetMs) {
      this.lateSamples++;
      if (this.lateSamples >= 2) {
        const factor = Math.max(MIN_FACTOR, Math.min(DECREASE, this.targetMs / lagMs));
        this.limit = Math.max(this.minReading, Math.floor(Math.min(this.limit, this.reading) * factor));
      }
    } else {
      this.lateSamples = 0;
      if (lagMs <= this.targetMs / 2 && this.limit !== Infinity) {
        // Nothing waits and there is room: the overload is over.
        if (this.waiting === 0 && this.reading < this.limit) this.limit = Infinity;
        else this.limit += Math.max(1, Math.ceil(this.limit * INCREASE));
      }
      this.resumeWithinLimit();
    }
    this.refuseStale();
  }

  /** Read connections with no answer for `staleAfterMs` become idle (and read again at their next answer). */
  private markIdle(): void {
    const before = this.now() - this.staleAfterMs;
    for (const [socket, state] of this.states) {
      if (state !== null || (this.lastAnswer.get(socket) ?? 0) > before) continue;
      this.states.set(socket, IDLE);
      this.reading--;
      this.idle++;
    }
  }

  /** Entries in the paused list, current or not (it stays within twice the paused connections, plus a margin). */
  listed(): number {
    return this.paused.length - this.pausedFrom;
  }

  /** Connections being read, paused and idle, and the limit (Infinity: off). */
  stats(): { reading: number; paused: number; idle: number; limit: number } {
    return { reading: this.reading, paused: this.waiting, idle: this.idle, limit: this.limit };
  }

  private current(p: Paused): boolean {
    return this.states.get(p.socket) === p;
  }

  private pause(socket: Socket): void {
    const entry: Paused = { socket, since: this.now() };
    this.states.set(socket, entry);
    this.reading--;
    this.waiting++;
    this.paused.push(entry);
    socket.pause();
    // Entries of connections that closed (or were read again) leave the list only when they come up at
    // either end, which may be never while the loop stays behind and nothing earns stale refusals (a
    // connection per request, none served): then each one kept its closed socket. The current entries
    // are exactly the `waiting` ones, so dropping the rest when they outnumber them is amortised O(1).
    if (this.listed() > 2 * this.waiting + 1024) this.compact();
  }

  /** The list of paused connections without the entries already taken from its start or no longer current. */
  private compact(): void {
    this.paused = this.paused.slice(this.pausedFrom).filter((p) => this.current(p));
    this.pausedFrom = 0;
  }

  /** A paused connection read again. */
  private markReading(socket: Socket): void {
    this.states.set(socket, null);
    this.reading++;
    this.waiting--;
  }

  /** Newest first: the connections just served keep being served. */
  private resumeWithinLimit(): void {
    while (this.reading < this.limit && this.paused.length > this.pausedFrom) {
      const entry = this.paused.pop() as Paused;
      if (!this.current(entry)) continue;
      this.markReading(entry.socket);
      entry.socket.resume();
    }
  }

  /** Oldest first, within the credit earned by served answers. */
  private refuseStale(): void {
    const now = this.now();
    while (this.staleCredit >= 1 && this.paused.length > this.pausedFrom) {
      const entry = this.paused[this.pausedFrom] as Paused;
      if (this.current(entry)) {
        if (now - entry.since < this.staleAfterMs) break;
        this.staleCredit -= 1;
        this.refuseNext.set(entry.socket, now);
        this.markReading(entry.socket);
        entry.socket.resume();
      }
      this.pausedFrom++;
    }
    // Near the connection cap, oldest first: closed, not refused (no credit needed: closing costs nothing).
    while (this.reading + this.waiting + this.idle > this.closeAbove && this.paused.length > this.pausedFrom) {
      const entry = this.paused[this.pausedFrom] as Paused;
      if (this.current(entry)) {
        if (now - entry.since < this.staleAfterMs) break;
        this.closed(entry.socket);
        entry.socket.destroy();
        this.events?.publish('connection.closedStale', {});
      }
      this.pausedFrom++;
    }
    if (this.pausedFrom > 1024 && this.pausedFrom * 2 > this.paused.length) this.compact();
  }

  private closed(socket: Socket): void {
    const state = this.states.get(socket);
    this.states.delete(socket);
    // A paused one stays in the list until it comes up; its entry is no longer current then.
    if (state === null) this.reading--;
    else if (state === IDLE) this.idle--;
    else if (state !== undefined) this.waiting--;
  }
}
