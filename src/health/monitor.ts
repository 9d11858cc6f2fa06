import type { HealthReport, MemberCheck } from '../engine/types';
import type { ProxyEvents } from '../events';
import type { Logger } from '../log';
import { fleetState, memberState } from './state';

/** What the monitor checks: the fleet's members, each within its budget (src/engine/fleet.ts). */
interface CheckedFleet {
  readonly checkBudgetMs: number;
  checkMembers(): Promise<MemberCheck[]>;
}

export interface HealthMonitorOptions {
  /** Reuse a result for at most this long (the spec allows up to one minute). */
  cacheMs: number;
  /** A passing check slower than this reports DEGRADED. */
  degradedAboveMs: number;
  /**
   * A customer encrypt/decrypt that succeeded this recently (default 5 s), within the check's own
   * time budget, proves the HSM works.
   */
  evidenceMs?: number;
}

/**
 * Deep HSM health (a real encrypt + decrypt on each HSM's health key), refreshed in the background so
 * that GetHealthStatus and readiness probes answer from a fresh cache instead of queueing on the HSM.
 * The states follow src/health/state.ts; the monitor adds the evidence: customer operations that each
 * HSM completed lately (the hsm.operation events).
 */
export class HealthMonitor {
  private last: HealthReport | undefined;
  private running: Promise<HealthReport> | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Date.now() of the last customer operation each HSM (by id) completed within the check's budget. */
  private readonly lastCustomerSuccess = new Map<string, number>();
  private unsubscribe: (() => void) | undefined;

  constructor(
    private readonly fleet: CheckedFleet,
    private readonly opts: HealthMonitorOptions,
    private readonly log: Logger,
    /** Every result is published as 'health.report'. */
    private readonly events?: ProxyEvents,
  ) {}

  /**
   * Keeps the cache warm (and readiness current), and from now on takes customer operations as
   * evidence; call after a first refresh(), once the proxy is about to take traffic: whatever runs
   * before is the proxy's own start-up, not customer traffic. An operation slower than the check's
   * budget is no evidence that the check would pass: it shows a slow HSM, which is what a timed-out
   * check reports.
   */
  start(): void {
    this.unsubscribe ??= this.events?.subscribe('hsm.operation', (e) => {
      if (e.ok && (e.operation === 'encrypt' || e.operation === 'decrypt') && e.seconds * 1000 < this.fleet.checkBudgetMs) this.lastCustomerSuccess.set(e.hsm, Date.now());
    });
    this.timer = setInterval(() => {
      const last = this.last;
      // Refresh a good result at half its lifetime, so get() rarely waits; a failed one per get()'s rule.
      if (!last || last.status === 'UNAVAILABLE' || Date.now() - last.checkedAt >= this.opts.cacheMs / 2) void this.get();
    }, 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  current(): HealthReport | undefined {
    return this.last;
  }

  /**
   * A good result is reused for cacheMs; a failed one for at most a second, so that recovery shows
   * at once instead of a stale UNAVAILABLE lingering for the whole cache period.
   */
  async get(): Promise<HealthReport> {
    const last = this.last;
    const maxAge = last?.status === 'UNAVAILABLE' ? Math.min(1000, this.opts.cacheMs) : this.opts.cacheMs;
    if (last && Date.now() - last.checkedAt < maxAge) return last;
    return this.refresh();
  }

  refresh(): Promise<HealthReport> {
    if (this.running) return this.running;
    this.running = this.check().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async check(): Promise<HealthReport> {
    const checks = await this.fleet.checkMembers();
    const members = checks.map((c) => memberState(c, { degradedAboveMs: this.opts.degradedAboveMs, recentlyWorking: this.recentlyWorking(c.id) }));
    const report = fleetState(members, Date.now());
    if (report.status !== this.last?.status) {
      this.log[report.status === 'ACTIVE' ? 'info' : 'warn']({ status: report.status, detail: report.detail }, 'HSM health changed');
    }
    this.last = report;
    this.events?.publish('health.report', { report });
    return report;
  }

  private recentlyWorking(hsm: string): boolean {
    return Date.now() - (this.lastCustomerSuccess.get(hsm) ?? 0) < (this.opts.evidenceMs ?? 5000);
  }
}
