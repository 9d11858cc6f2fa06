import { expect } from '@jest/globals';
import { FleetEngine } from '../../src/engine/fleet';
import type { HealthReport, HsmEngine } from '../../src/engine/types';
import { ProxyEvents } from '../../src/events';
import { HealthMonitor } from '../../src/health/monitor';
import { silentLogger } from '../../src/log';
import { useFakeTime } from '../support/clock';

/** An HSM whose deep check answers `check()` (by default never: a slow HSM); only what a health check reads. */
function hsm(check: () => Promise<HealthReport> = () => new Promise<HealthReport>(() => undefined)): HsmEngine {
  return { healthCheck: check, info: () => ({ vendor: 'v', id: 't/1', model: 'm' }), isConnected: () => true, close: async () => undefined } as unknown as HsmEngine;
}

const op = (seconds: number, hsmId = 'h'): { hsm: string; operation: 'encrypt'; seconds: number; ok: boolean } => ({ hsm: hsmId, operation: 'encrypt', seconds, ok: true });

let events: ProxyEvents;
const monitors: HealthMonitor[] = [];

/** A fleet of these HSMs (one slow HSM by default) under a monitor, each check with a budget of 30 ms. */
function monitor(members: Record<string, HsmEngine> = { h: hsm() }): HealthMonitor {
  const fleet = new FleetEngine(
    Object.entries(members).map(([id, engine]) => ({ id, engine })),
    { breakerFailures: 3, probeIntervalMs: 1000, checkBudgetMs: 30, logger: silentLogger },
  );
  const m = new HealthMonitor(fleet, { cacheMs: 0, degradedAboveMs: 15 }, silentLogger, events);
  monitors.push(m);
  return m;
}

/** One deep check, run to its 30 ms budget on the fake clock. */
async function check(m: HealthMonitor): Promise<HealthReport> {
  const report = m.refresh();
  await jest.advanceTimersByTimeAsync(30);
  return report;
}

beforeEach(() => {
  useFakeTime();
  events = new ProxyEvents();
});
afterEach(() => {
  for (const m of monitors.splice(0)) m.stop();
  jest.useRealTimers();
});

describe('HealthMonitor: customer calls as evidence that a timed-out check is load, not a broken HSM', () => {
  it('a fast customer call after start() turns a timed-out check into DEGRADED', async () => {
    const m = monitor();
    m.start();
    events.publish('hsm.operation', op(0.002));
    expect((await check(m)).status).toBe('DEGRADED');
  });

  it('calls before start() (the start-up warm-ups) are no evidence', async () => {
    const m = monitor();
    events.publish('hsm.operation', op(0.002));
    m.start();
    expect(await check(m)).toMatchObject({ status: 'UNAVAILABLE', timedOut: true });
  });

  it('a call slower than the check budget is no evidence: it shows the same slow HSM', async () => {
    const m = monitor();
    m.start();
    events.publish('hsm.operation', op(0.3));
    expect((await check(m)).status).toBe('UNAVAILABLE');
  });

  it('evidence lasts evidenceMs (5 s by default), counted to the end of the check', async () => {
    const m = monitor();
    m.start();
    events.publish('hsm.operation', op(0.002));
    // The check ends 30 ms after it starts: started 4,969 ms after the call, it ends 1 ms inside the window.
    await jest.advanceTimersByTimeAsync(4969);
    expect((await check(m)).status).toBe('DEGRADED');
    events.publish('hsm.operation', op(0.002));
    await jest.advanceTimersByTimeAsync(4970);
    expect((await check(m)).status).toBe('UNAVAILABLE');
  });

  it('in a fleet, a call is evidence for the HSM that served it only', async () => {
    const m = monitor({ h: hsm(), g: hsm() });
    m.start();
    events.publish('hsm.operation', op(0.002, 'h'));
    expect(await check(m)).toMatchObject({
      status: 'DEGRADED',
      members: [
        { id: 'h', healthStatus: 'DEGRADED' },
        { id: 'g', healthStatus: 'UNAVAILABLE' },
      ],
    });
  });
});

describe('HealthMonitor: one rule per state, for one HSM and for each HSM of a fleet', () => {
  const passing = (latencyMs: number) => () => Promise.resolve<HealthReport>({ status: 'ACTIVE', checkedAt: Date.now(), latencyMs });

  it('a slow passing check is DEGRADED, in the member that was slow', async () => {
    expect(await check(monitor({ h: hsm(passing(20)) }))).toEqual({ status: 'DEGRADED', checkedAt: expect.any(Number), latencyMs: 20, detail: 'health check took 20 ms' });
    expect(await check(monitor({ h: hsm(passing(1)), g: hsm(passing(20)) }))).toMatchObject({
      status: 'DEGRADED',
      members: [
        { id: 'h', healthStatus: 'ACTIVE' },
        { id: 'g', healthStatus: 'DEGRADED', detail: 'health check took 20 ms' },
      ],
    });
  });

  it('a check that fails (not by time) is UNAVAILABLE with its reason, and no timeout', async () => {
    const report = await check(monitor({ h: hsm(() => Promise.reject(new Error('boom'))) }));
    expect(report).toMatchObject({ status: 'UNAVAILABLE', detail: 'health check failed' });
    expect(report.timedOut).toBeUndefined();
  });

  it('a fleet timed out on every HSM is a timeout (GetHealthStatus: DependencyTimeoutException)', async () => {
    expect(await check(monitor({ h: hsm(), g: hsm() }))).toMatchObject({ status: 'UNAVAILABLE', timedOut: true });
  });
});
