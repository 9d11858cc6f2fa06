import { Deadline } from '../deadline';
import type { ProxyEvents } from '../events';
import type { Logger } from '../log';
import { EngineError, isEngineError } from './errors';
import type { CryptoEngine, EkmInfo, EngineStatus, GcmResult, HealthReport, HsmEngine, MemberCheck, PoolStats } from './types';

/** Where each configured key version label lives: the HSM ids named on its versions, or undefined for every HSM. */
export type Placement = ReadonlyMap<string, readonly string[] | undefined>;

/** One HSM of the fleet, as the fleet sees it. */
interface FleetMemberSpec {
  id: string;
  engine: HsmEngine;
}

interface FleetOptions {
  /** Consecutive retryable failures that open an HSM's circuit breaker. */
  breakerFailures: number;
  /** How often an HSM with an open breaker is probed (a real health check). */
  probeIntervalMs: number;
  /** Time budget of one member's deep check: the health monitor's and the breaker's probe. */
  checkBudgetMs: number;
  logger: Logger;
  events?: ProxyEvents;
  /** Called once when the fleet closes: what its owner attached to it (src/engine/open-engine.ts). */
  onClose?: () => void;
}

interface FleetMemberStats {
  id: string;
  status: EngineStatus;
  breaker: 'closed' | 'open';
  pool: PoolStats;
  /** Configured key versions this HSM should hold but does not. */
  missing: string[];
}

class Member {
  outstanding = 0;
  failures = 0;
  open = false;
  probe: NodeJS.Timeout | undefined;
  readonly missing = new Set<string>();
  constructor(
    readonly id: string,
    readonly engine: HsmEngine,
  ) {}

  /** Outstanding work relative to what the HSM can run at once, so that a bigger pool takes more. */
  load(): number {
    return this.outstanding / Math.max(1, this.engine.poolStats().size);
  }

  serving(): boolean {
    return !this.open && this.engine.isConnected();
  }
}

/** Failures another HSM may not share: its connection or device, or its queue. Never a verdict on the data. */
function retryable(e: unknown): boolean {
  return isEngineError(e) && (e.kind === 'unavailable' || e.kind === 'device' || e.kind === 'busy' || e.kind === 'key-not-found');
}

/** Failures that count against an HSM's breaker: it could not do the work, whoever asked. */
function hsmFault(e: unknown): boolean {
  return isEngineError(e) && (e.kind === 'unavailable' || e.kind === 'device');
}

/**
 * The proxy's HSMs as one CryptoEngine, one HSM or ten. Each request goes to a serving HSM that should
 * hold the key version, the one with the least outstanding work for its pool size: it needs no tuning,
 * sends less to an HSM that has become slow (its work piles up, so it is picked less) and more to one
 * with a larger pool, and a tie goes round-robin so that an idle fleet still spreads. A failure another
 * HSM may not share (connection, device, full queue, or the key missing on this one) is retried once on
 * another holder while the deadline allows; a tag mismatch or an unusable key never is (the answer would
 * be the same, and a tag failure must not become a probe oracle across HSMs). An HSM failing
 * `breakerFailures` times in a row is taken out and probed in the background until a deep check passes;
 * its engine rebuilds its own sessions meanwhile (Connector's reconnect).
 *
 * A fleet of one has nowhere else to send work, so its requests go straight to its HSM without that
 * bookkeeping (placement, retries, breaker, missing versions): the routing could only turn the one HSM
 * away, and one HSM costs per request what its bare engine does. It answers as its HSM too (info,
 * status, readiness, health without a member list), as a single HSM always has.
 */
export class FleetEngine implements CryptoEngine {
  private readonly members: Member[];
  /** The HSM of a fleet of one. */
  private readonly solo: HsmEngine | undefined;
  private placement: Placement = new Map();
  private labels: readonly string[] = [];
  private next = 0;
  private closed = false;

  constructor(
    members: readonly FleetMemberSpec[],
    private readonly opts: FleetOptions,
  ) {
    if (members.length === 0) throw new Error('a fleet needs at least one HSM');
    this.members = members.map((m) => new Member(m.id, m.engine));
    this.solo = members.length === 1 ? members[0]?.engine : undefined;
  }

  encrypt(label: string, plaintext: Buffer, aad: Buffer, deadline?: Deadline): Promise<GcmResult> {
    if (this.solo) return this.solo.encrypt(label, plaintext, aad, deadline);
    return this.route(label, deadline, (e) => e.encrypt(label, plaintext, aad, deadline));
  }

  decrypt(label: string, iv: Buffer, aad: Buffer, ciphertext: Buffer, tag: Buffer, deadline?: Deadline): Promise<Buffer> {
    if (this.solo) return this.solo.decrypt(label, iv, aad, ciphertext, tag, deadline);
    return this.route(label, deadline, (e) => e.decrypt(label, iv, aad, ciphertext, tag, deadline));
  }

  checkKey(label: string, deadline?: Deadline): Promise<void> {
    if (this.solo) return this.solo.checkKey(label, deadline);
    return this.route(label, deadline, (e) => e.checkKey(label, deadline));
  }

  /**
   * Where each configured key version lives: at start, and after each configuration reload (the owner
   * follows config.reload). What now lacks a version is said at once (log, health), not at its first request.
   */
  place(placement: Placement): void {
    this.placement = placement;
    this.labels = [...placement.keys()];
    if (!this.solo && !this.closed) void this.reportMissingKeys().catch(() => undefined);
  }

  /** The members that should hold this label, in the order to try them. */
  private holders(label: string): Member[] {
    const placed = this.placement.get(label);
    return placed ? this.members.filter((m) => placed.includes(m.id)) : this.members;
  }

  private pick(label: string, candidates: Member[], tried: ReadonlySet<Member>): Member | undefined {
    const open = candidates.filter((m) => !tried.has(m));
    // One known to lack the version is tried only when no other can serve (it may have been restored).
    const serving = open.filter((m) => m.serving() && !m.missing.has(label));
    const pool = serving.length ? serving : open.filter((m) => m.serving());
    if (pool.length === 0) return undefined;
    const start = this.next++ % pool.length;
    let best: Member | undefined;
    for (let i = 0; i < pool.length; i++) {
      const m = pool[(start + i) % pool.length] as Member;
      if (!best || m.load() < best.load()) best = m;
    }
    return best;
  }

  private async route<T>(label: string, deadline: Deadline | undefined, op: (engine: HsmEngine) => Promise<T>): Promise<T> {
    const holders = this.holders(label);
    if (holders.length === 0) throw new EngineError('key-not-found', 'no HSM of the fleet is configured to hold this key version');
    const tried = new Set<Member>();
    let last: { error: unknown } | undefined;
    for (let attempt = 0; attempt < 2; attempt++) {
      const m = this.pick(label, holders, tried);
      if (!m) break;
      tried.add(m);
      m.outstanding++;
      try {
        const result = await op(m.engine);
        this.succeeded(m, label);
        return result;
      } catch (e) {
        last = { error: e };
        this.failed(m, label, e);
        if (!retryable(e) || deadline?.expired || this.closed) throw e;
      } finally {
        m.outstanding--;
      }
    }
    if (last) throw last.error;
    throw new EngineError('unavailable', 'no HSM holding this key version is available');
  }

  private succeeded(m: Member, label: string): void {
    m.failures = 0;
    if (m.missing.delete(label)) this.opts.logger.info({ hsm: m.id }, 'a key version missing from this HSM is there again');
  }

  private failed(m: Member, label: string, e: unknown): void {
    if (isEngineError(e) && e.kind === 'key-not-found') {
      if (!m.missing.has(label)) this.opts.logger.warn({ hsm: m.id }, 'a configured key version is missing from this HSM');
      // Bounded by the configured labels.
      m.missing.add(label);
      return;
    }
    if (!hsmFault(e)) return;
    m.failures++;
    if (!m.open && m.failures >= this.opts.breakerFailures) this.openBreaker(m, e);
  }

  private openBreaker(m: Member, cause: unknown): void {
    m.open = true;
    this.opts.events?.publish('hsm.breaker', { hsm: m.id, open: true });
    this.opts.logger.warn({ hsm: m.id, failures: m.failures, err: isEngineError(cause) ? cause.message : 'error' }, 'HSM taken out of the fleet; probing it');
    const probe = async (): Promise<void> => {
      if (this.closed) return;
      const deadline = new Deadline(this.opts.checkBudgetMs);
      const report = await this.timedCheck(m, deadline);
      deadline.clear();
      if (report.status !== 'UNAVAILABLE') {
        m.open = false;
        m.failures = 0;
        m.probe = undefined;
        this.opts.events?.publish('hsm.breaker', { hsm: m.id, open: false });
        this.opts.logger.info({ hsm: m.id }, 'HSM answers again; back in the fleet');
        return;
      }
      m.probe = setTimeout(() => void probe(), this.opts.probeIntervalMs);
      m.probe.unref();
    };
    m.probe = setTimeout(() => void probe(), this.opts.probeIntervalMs);
    m.probe.unref();
  }

  /** The time budget of one member's deep check. */
  get checkBudgetMs(): number {
    return this.opts.checkBudgetMs;
  }

  /**
   * Every member's deep check at once, each within checkBudgetMs, so that one hung HSM does not hold up
   * the others' answers. src/health/state.ts decides each member's state, and the fleet's, from these.
   */
  checkMembers(): Promise<MemberCheck[]> {
    return Promise.all(this.members.map((m) => this.checkMember(m)));
  }

  private async checkMember(m: Member): Promise<MemberCheck> {
    if (m.open) return { id: m.id, model: m.engine.info().model, breakerOpen: true, missing: m.missing.size };
    const deadline = new Deadline(this.opts.checkBudgetMs);
    try {
      const report = await this.timedCheck(m, deadline);
      // Versions known to be missing are looked for again (restored?) in what is left of the budget.
      if (report.status !== 'UNAVAILABLE' && m.missing.size > 0) await deadline.race(this.recheckMissing(m, false, deadline)).catch(() => undefined);
      return { id: m.id, model: m.engine.info().model, breakerOpen: false, report, missing: m.missing.size };
    } finally {
      deadline.clear();
    }
  }

  /** The one place a deep check meets its time budget: one that runs over is UNAVAILABLE and timedOut. */
  private async timedCheck(m: Member, deadline: Deadline): Promise<HealthReport> {
    try {
      return await deadline.race(m.engine.healthCheck(deadline));
    } catch (e) {
      const latencyMs = this.opts.checkBudgetMs;
      if (deadline.expired) return { status: 'UNAVAILABLE', checkedAt: Date.now(), latencyMs, detail: 'health check timed out', timedOut: true };
      return { status: 'UNAVAILABLE', checkedAt: Date.now(), latencyMs, detail: isEngineError(e) ? e.message : 'health check failed' };
    }
  }

  /**
   * Confirms the labels this HSM should hold (all of them, or only those known missing, to see them
   * restored). checkKey's cache keeps it to one attribute read per label and period; a full pass runs at
   * start and after a configuration change, since on a network HSM each read is a round trip.
   */
  private async recheckMissing(m: Member, all = false, deadline?: Deadline): Promise<void> {
    const labels = all ? this.labels : [...m.missing];
    for (const label of labels) {
      const placed = this.placement.get(label);
      if (placed && !placed.includes(m.id)) {
        m.missing.delete(label);
        continue;
      }
      try {
        await m.engine.checkKey(label, deadline);
        m.missing.delete(label);
      } catch (e) {
        if (isEngineError(e) && e.kind === 'key-not-found') m.missing.add(label);
        if ((isEngineError(e) && e.kind === 'unavailable') || deadline?.expired) return;
      }
    }
  }

  /** Logs every configured key version missing from an HSM that should hold it. */
  private async reportMissingKeys(): Promise<void> {
    for (const m of this.members) {
      if (!m.engine.isConnected()) continue;
      await this.recheckMissing(m, true);
      if (m.missing.size > 0) this.opts.logger.warn({ hsm: m.id, missing: m.missing.size }, 'configured key versions missing from this HSM (see xks-admin key describe)');
    }
  }

  info(): EkmInfo {
    if (this.solo) return this.solo.info();
    const infos = this.members.map((m) => m.engine.info());
    return { vendor: [...new Set(infos.map((i) => i.vendor))].join(', '), id: this.members.map((m) => m.id).join(','), model: [...new Set(infos.map((i) => i.model))].join(', ') };
  }

  poolStats(): PoolStats {
    const total = { size: 0, inUse: 0, idle: 0, waiting: 0 };
    for (const m of this.members) {
      const s = m.engine.poolStats();
      total.size += s.size;
      total.inUse += s.inUse;
      total.idle += s.idle;
      total.waiting += s.waiting;
    }
    return total;
  }

  /** Warms every HSM's path at once (see Pkcs11Engine.warmUp). */
  async warmUp(rounds: number): Promise<void> {
    await Promise.all(this.members.map((m) => m.engine.warmUp(rounds)));
  }

  /** One HSM's own engine (tests check that what one HSM sealed the other opens). */
  member(id: string): HsmEngine | undefined {
    return this.members.find((m) => m.id === id)?.engine;
  }

  memberStats(): FleetMemberStats[] {
    return this.members.map((m) => ({
      id: m.id,
      status: m.engine.status(),
      breaker: m.open ? 'open' : 'closed',
      pool: m.engine.poolStats(),
      missing: [...m.missing],
    }));
  }

  /** Ready while every configured key version has a serving HSM that holds it. */
  isConnected(): boolean {
    if (this.solo) return this.solo.isConnected();
    if (!this.members.some((m) => m.serving())) return false;
    return this.labels.every((label) => this.holders(label).some((m) => m.serving() && !m.missing.has(label)));
  }

  status(): EngineStatus {
    if (this.solo) return this.solo.status();
    if (this.isConnected()) return { state: 'connected' };
    const states = this.members.map((m) => ({ id: m.id, ...m.engine.status() }));
    const state = states.every((s) => s.state === 'misconfigured') ? 'misconfigured' : 'disconnected';
    const reason = states
      .filter((s) => s.state !== 'connected' || this.members.find((m) => m.id === s.id)?.open)
      .map((s) => `${s.id}: ${s.reason ?? 'taken out after repeated failures'}`)
      .join('; ');
    return { state, reason: reason || 'some key versions have no serving HSM' };
  }

  async close(): Promise<void> {
    if (!this.closed) this.opts.onClose?.();
    this.closed = true;
    for (const m of this.members) if (m.probe) clearTimeout(m.probe);
    await Promise.all(this.members.map((m) => m.engine.close()));
  }
}
