import type { EkmHealth, HealthReport, MemberCheck, MemberHealth } from '../engine/types';

/** The rules that turn a member's check into its state (src/health/monitor.ts gives them). */
interface StateRules {
  /** A passing check slower than this is DEGRADED. */
  degradedAboveMs: number;
  /** Customer operations on this HSM succeeded lately, within the check's own budget. */
  recentlyWorking: boolean;
}

/** One member's state with what the fleet's answer is made of. */
interface MemberState extends MemberHealth {
  latencyMs: number;
  timedOut?: boolean;
}

/**
 * The one place an HSM's health state is decided. An HSM the breaker took out is UNAVAILABLE. A check
 * that timed out while customer operations on the same HSM kept succeeding is DEGRADED, not
 * UNAVAILABLE: the HSM demonstrably works, and the check ran late behind the same event loop and
 * libuv threads as the customer calls. An HSM that answers errors is not covered by that evidence: its
 * check fails with the error, not a timeout. A passing check is DEGRADED when slow, or when the HSM
 * lacks configured key versions that it should hold.
 */
export function memberState(check: MemberCheck, rules: StateRules): MemberState {
  const { id, model, report } = check;
  const at = (healthStatus: EkmHealth, detail: string | undefined, latencyMs: number, timedOut?: true): MemberState => ({
    id,
    model,
    healthStatus,
    ...(detail !== undefined && { detail }),
    latencyMs,
    ...(timedOut && { timedOut }),
  });
  if (check.breakerOpen || !report) return at('UNAVAILABLE', 'taken out after repeated failures; probing', 0);
  if (report.timedOut) {
    return rules.recentlyWorking
      ? at('DEGRADED', 'health check timed out under load; customer operations are succeeding', report.latencyMs)
      : at('UNAVAILABLE', 'health check timed out', report.latencyMs, true);
  }
  if (report.status !== 'ACTIVE') return at(report.status, report.detail, report.latencyMs);
  if (report.latencyMs > rules.degradedAboveMs) return at('DEGRADED', `health check took ${report.latencyMs} ms`, report.latencyMs);
  if (check.missing > 0) return at('DEGRADED', `${check.missing} configured key version(s) missing from this HSM`, report.latencyMs);
  return at('ACTIVE', undefined, report.latencyMs);
}

/**
 * The fleet's state from its members': ACTIVE when all are, UNAVAILABLE only when none can serve,
 * DEGRADED between. A fleet of one answers as its HSM, without a member list, as a single HSM always has
 * (GetHealthStatus then names the HSM by its token, and the health metric has no per-HSM series).
 */
export function fleetState(members: readonly MemberState[], checkedAt: number): HealthReport {
  if (members.length === 1) {
    const [m] = members as [MemberState];
    return { status: m.healthStatus, checkedAt, latencyMs: m.latencyMs, ...(m.detail !== undefined && { detail: m.detail }), ...(m.timedOut && { timedOut: true }) };
  }
  const serving = members.filter((m) => m.healthStatus !== 'UNAVAILABLE').length;
  const status: EkmHealth = serving === 0 ? 'UNAVAILABLE' : members.every((m) => m.healthStatus === 'ACTIVE') ? 'ACTIVE' : 'DEGRADED';
  const down = members.filter((m) => m.healthStatus !== 'ACTIVE').map((m) => m.id);
  return {
    status,
    checkedAt,
    latencyMs: Math.max(...members.map((m) => m.latencyMs)),
    ...(down.length > 0 && { detail: `${serving} of ${members.length} HSMs serving; not ACTIVE: ${down.join(', ')}` }),
    ...(serving === 0 && members.every((m) => m.timedOut) && { timedOut: true }),
    members: members.map(({ id, model, healthStatus, detail }) => ({ id, model, healthStatus, ...(detail !== undefined && { detail }) })),
  };
}
