import { Deadline } from '../deadline';
import type { CryptoEngine, HealthReport } from '../engine/types';
import type { ProxyEvents } from '../events';
import type { Logger } from '../log';

export interface HealthMonitorOptions {
  /** Reuse a result for at most this long (the spec allows up to one minute). */
  cacheMs: number;
  /** Time budget of one deep check. */
  timeoutMs: number;
  /** A passing check slower than this reports DEGRADED. */
  degradedAboveMs: number;
  /**
   * A customer encrypt/decrypt that succeeded this recently (default 5 s), within the check's own
   * time budget, proves the HSM works.
   */
  evidenceMs?: number;
}

/**
 * Deep HSM health (a real encrypt + decrypt on the health key), refreshed in the background so that
 * GetHealthStatus and readiness probes answer from a fresh cache instead of queueing on the HSM.
 *
 * Under overload the check can still run late (the event loop, or libuv's threads, are shared with
 * customer calls): a check that timed out while customer operations kept succeeding reports DEGRADED,
 * not UNAVAILABLE, because the HSM is demonstrably working. An HSM that answers errors is not covered
 * by that evidence: its check fails with the error, not a timeout.
 */
export class HealthMonitor {
  private last: HealthReport | undefined;
  private running: Promise<HealthReport> | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Date.now() of the last customer operation the HSM completed within timeoutMs. */
  private lastCustomerSuccess = 0;
  private unsubscribe: (() => void) | undefined;

  constructor(
    private readonly engine: CryptoEngine,
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
      if (e.ok && (e.operation === 'encrypt' || e.operation === 'decrypt') && e.seconds * 1000 < this.opts.timeoutMs) this.lastCustomerSuccess = Date.now();
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
    const deadline = new Deadline(this.opts.timeoutMs);
    let report: HealthReport;
    try {
      report = await deadline.race(this.engine.healthCheck(deadline));
      if (report.status === 'ACTIVE' && report.latencyMs > this.opts.degradedAboveMs) {
        report = { ...report, status: 'DEGRADED', detail: `health check took ${report.latencyMs} ms` };
      }
    } catch {
      report = this.recentlyWorking()
        ? { status: 'DEGRADED', checkedAt: Date.now(), latencyMs: this.opts.timeoutMs, detail: 'health check timed out under load; customer operations are succeeding' }
        : { status: 'UNAVAILABLE', checkedAt: Date.now(), latencyMs: this.opts.timeoutMs, detail: 'health check timed out', timedOut: true };
    } finally {
      deadline.clear();
    }
    if (report.status !== this.last?.status) {
      this.log[report.status === 'ACTIVE' ? 'info' : 'warn']({ status: report.status, detail: report.detail }, 'HSM health changed');
    }
    this.last = report;
    this.events?.publish('health.report', { report });
    return report;
  }

  private recentlyWorking(): boolean {
    return Date.now() - this.lastCustomerSuccess < (this.opts.evidenceMs ?? 5000);
  }
}
