import { Deadline } from '../deadline';
import type { ProxyEvents } from '../events';
import type { Logger } from '../log';
import { EngineError, isEngineError } from './errors';
import type { CryptoEngine, EkmHealth, EkmInfo, EngineStatus, GcmResult, HealthReport, PoolStats } from './types';

interface WarmUp {
  warmUp(rounds: number): Promise<void>;
}

/** One HSM of the fleet, as the fleet sees it. */
export interface FleetMemberSpec {
  id: string;
  engine: CryptoEngine;
}

export interface FleetOptions {
  /**
   * The HSM ids that should hold the key version with this label (keys[].versions[].hsms); undefined
   * means every HSM. Read per request, so a configuration reload moves placement without a restart.
   */
  placement(label: string): readonly string[] | undefined;
  /** Every configured key version label, for readiness and the missing-key report. */
  labels(): readonly string[];
  /** Consecutive retryable failures that open an HSM's circuit breaker. */
  breakerFailures: number;
  /** How often an HSM with an open breaker is probed (a real health check). */
  probeIntervalMs: number;
  /** Budget of one member's deep health check; the fleet answers without the members that run over. */
  healthTimeoutMs: number;
  logger: Logger;
  events?: ProxyEvents;
}

/** Per-HSM view for health answers, metrics and the admin tool. */
export interface FleetMemberReport {
  id: string;
  model: string;
  healthStatus: EkmHealth;
  detail?: string;
}

export interface FleetMemberStats {
  id: string;
  status: EngineStatus;
  breaker: 'closed' | 'open';
  outstanding: number;
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
    readonly engine: CryptoEngine,
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
 * Several HSMs as one CryptoEngine. Each request goes to a serving HSM that should hold the key version,
 * the one with the least outstanding work for its pool size: it needs no tuning, sends less to an HSM
 * that has become slow (its work piles up, so it is picked less) and more to one with a larger pool, and
 * a tie goes round-robin so that an idle fleet still spreads. A failure another HSM may not share
 * (connection, device, full queue, or the key missing on this one) is retried once on another holder
 * while the deadline allows; a tag mismatch or an unusable key never is (the answer would be the same,
 * and a tag failure must not become a probe oracle across HSMs). An HSM failing `breakerFailures` times
 * in a row is taken out and probed in the background until a deep check passes; its engine rebuilds its
 * own sessions meanwhile (Connector's reconnect).
 */
export class FleetEngine implements CryptoEngine {
  private readonly members: Member[];
  private next = 0;
  private closed = false;

  constructor(
    members: readonly FleetMemberSpec[],
    private readonly opts: FleetOptions,
  ) {
    if (members.length === 0) throw new Error('a fleet needs at least one HSM');
    this.members = members.map((m) => new Member(m.id, m.engine));
  }

  encrypt(label: string, plaintext: Buffer, aad: Buffer, deadline?: Deadline): Promise<GcmResult> {
    return this.route(label, deadline, (e) => e.encrypt(label, plaintext, aad, deadline));
  }

  decrypt(label: string, iv: Buffer, aad: Buffer, ciphertext: Buffer, tag: Buffer, deadline?: Deadline): Promise<Buffer> {
    return this.route(label, deadline, (e) => e.decrypt(label, iv, aad, ciphertext, tag, deadline));
  }

  checkKey(label: string, deadline?: Deadline): Promise<void> {
    return this.route(label, deadline, (e) => e.checkKey(label, deadline));
  }

  /** The members that should hold this label, in the order to try them. */
  private holders(label: string): Member[] {
    const placed = this.opts.placement(label);
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

  private async route<T>(label: string, deadline: Deadline | undefined, op: (engine: CryptoEngine) => Promise<T>): Promise<T> {
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
      const report = await this.memberHealth(m, true);
      if (report.healthStatus !== 'UNAVAILABLE') {
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

  /** One member's deep check within the fleet's budget; `ignoreBreaker` for the breaker's own probe. */
  private async memberHealth(m: Member, ignoreBreaker = false): Promise<FleetMemberReport> {
    const model = m.engine.info().model;
    if (m.open && !ignoreBreaker) return { id: m.id, model, healthStatus: 'UNAVAILABLE', detail: 'taken out after repeated failures; probing' };
    const deadline = new Deadline(this.opts.healthTimeoutMs);
    let report: HealthReport;
    try {
      report = await deadline.race(m.engine.healthCheck(deadline));
    } catch {
      report = { status: 'UNAVAILABLE', checkedAt: Date.now(), latencyMs: this.opts.healthTimeoutMs, detail: 'health check timed out', timedOut: true };
    } finally {
      deadline.clear();
    }
    if (report.status !== 'UNAVAILABLE') await this.recheckMissing(m);
    if (report.status === 'ACTIVE' && m.missing.size > 0) {
      return { id: m.id, model: m.engine.info().model, healthStatus: 'DEGRADED', detail: `${m.missing.size} configured key version(s) missing from this HSM` };
    }
    return { id: m.id, model: m.engine.info().model, healthStatus: report.status, detail: report.detail };
  }

  /**
   * Confirms the labels this HSM should hold (all of them, or only those known missing, to see them
   * restored). checkKey's cache keeps it to one attribute read per label and period; a full pass runs at
   * start and after a configuration change, since on a network HSM each read is a round trip.
   */
  private async recheckMissing(m: Member, all = false): Promise<void> {
    const labels = all ? this.opts.labels() : [...m.missing];
    for (const label of labels) {
      const placed = this.opts.placement(label);
      if (placed && !placed.includes(m.id)) {
        m.missing.delete(label);
        continue;
      }
      try {
        await m.engine.checkKey(label);
        m.missing.delete(label);
      } catch (e) {
        if (isEngineError(e) && e.kind === 'key-not-found') m.missing.add(label);
        if (isEngineError(e) && e.kind === 'unavailable') return;
      }
    }
  }

  /** Logs every configured key version missing from an HSM that should hold it (at start, and on demand). */
  async reportMissingKeys(): Promise<Record<string, string[]>> {
    const out: Record<string, string[]> = {};
    for (const m of this.members) {
      if (!m.engine.isConnected()) continue;
      await this.recheckMissing(m, true);
      if (m.missing.size > 0) {
        out[m.id] = [...m.missing];
        this.opts.logger.warn({ hsm: m.id, missing: m.missing.size }, 'configured key versions missing from this HSM (see xks-admin key describe)');
      }
    }
    return out;
  }

  /**
   * Every member checked in parallel, each within its own budget so that one hung HSM does not hide the
   * others. The fleet is ACTIVE when all are, UNAVAILABLE only when none can serve, DEGRADED between.
   */
  async healthCheck(): Promise<HealthReport> {
    const started = Date.now();
    const members = await Promise.all(this.members.map((m) => this.memberHealth(m)));
    const serving = members.filter((r) => r.healthStatus !== 'UNAVAILABLE').length;
    const status: EkmHealth = serving === 0 ? 'UNAVAILABLE' : members.every((r) => r.healthStatus === 'ACTIVE') ? 'ACTIVE' : 'DEGRADED';
    const down = members.filter((r) => r.healthStatus !== 'ACTIVE').map((r) => r.id);
    return {
      status,
      checkedAt: Date.now(),
      latencyMs: Date.now() - started,
      ...(down.length ? { detail: `${serving} of ${members.length} HSMs serving; not ACTIVE: ${down.join(', ')}` } : {}),
      ...(serving === 0 && members.every((r) => r.detail === 'health check timed out') ? { timedOut: true } : {}),
      members,
    };
  }

  info(): EkmInfo {
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

  /** Warms every HSM's path at once (see Pkcs11Engine.warmUp); members without it are skipped. */
  async warmUp(rounds: number): Promise<void> {
    await Promise.all(this.members.map((m) => (m.engine as Partial<WarmUp>).warmUp?.(rounds)));
  }

  /** One HSM's own engine (tests check that what one HSM sealed the other opens). */
  member(id: string): CryptoEngine | undefined {
    return this.members.find((m) => m.id === id)?.engine;
  }

  memberStats(): FleetMemberStats[] {
    return this.members.map((m) => ({
      id: m.id,
      status: m.engine.status(),
      breaker: m.open ? 'open' : 'closed',
      outstanding: m.outstanding,
      pool: m.engine.poolStats(),
      missing: [...m.missing],
    }));
  }

  /** Ready while every configured key version has a serving HSM that holds it. */
  isConnected(): boolean {
    if (!this.members.some((m) => m.serving())) return false;
    return this.opts.labels().every((label) => this.holders(label).some((m) => m.serving() && !m.missing.has(label)));
  }

  status(): EngineStatus {
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
    this.closed = true;
    for (const m of this.members) if (m.probe) clearTimeout(m.probe);
    await Promise.all(this.members.map((m) => m.engine.close()));
  }
}
