import { FleetEngine } from '../../src/engine/fleet';
import type { HealthReport, HsmEngine } from '../../src/engine/types';
import { ProxyEvents } from '../../src/events';
import { HealthMonitor } from '../../src/health/monitor';
import { silentLogger } from '../../src/log';

/** An HSM whose deep check answers `check()` (by default never: a slow HSM); only what a health check reads. */
function hsm(check: () => Promise<HealthReport> = () => new Promise<HealthReport>(() => undefined)): HsmEngine {
  return { healthCheck: check, info: () => ({ vendor: 'v', id: 't/1', model: 'm' }), isConnected: () => true, close: async () => undefined } as unknown as HsmEngine;
}

/** A fleet of these HSMs under a monitor; checks that answer at once get a budget no busy machine can spend. */
function monitor(members: Record<string, HsmEngine> = { h: hsm() }, checkBudgetMs = 30): { m: HealthMonitor; events: ProxyEvents } {
  const events = new ProxyEvents();
  const fleet = new FleetEngine(
    Object.entries(members).map(([id, engine]) => ({ id, engine })),
    { breakerFailures: 3, probeIntervalMs: 1000, checkBudgetMs, logger: silentLogger },
  );
  return { m: new HealthMonitor(fleet, { cacheMs: 0, degradedAboveMs: 15 }, silentLogger, events), events };
}

const op = (seconds: number, hsmId = 'h'): { hsm: string; operation: 'encrypt'; seconds: number; ok: boolean } => ({ hsm: hsmId, operation: 'encrypt', seconds, ok: true });

describe('HealthMonitor: customer calls as evidence that a timed-out check is load, not a broken HSM', () => {
  it('a fast customer call after start() turns a timed-out check into DEGRADED', async () => {
    const { m, events } = monitor();
    m.start();
    try {
      events.publish('hsm.operation', op(0.002));
      expect((await m.refresh()).status).toBe('DEGRADED');
    } finally {
      m.stop();
    }
  });

  it('calls before start() (the start-up warm-ups) are no evidence', async () => {
    const { m, events } = monitor();
    events.publish('hsm.operation', op(0.002));
    m.start();
    try {
      expect(await m.refresh()).toMatchObject({ status: 'UNAVAILABLE', timedOut: true });
    } finally {
      m.stop();
    }
  });

  it('a call slower than the check budget is no evidence: it shows the same slow HSM', async () => {
    const { m, events } = monitor();
    m.start();
    try {
      events.publish('hsm.operation', op(0.3));
      expect((await m.refresh()).status).toBe('UNAVAILABLE');
    } finally {
      m.stop();
    }
  });

  it('in a fleet, a call is evidence for the HSM that served it only', async () => {
    const { m, events } = monitor({ h: hsm(), g: hsm() });
    m.start();
    try {
      events.publish('hsm.operation', op(0.002, 'h'));
      expect(await m.refresh()).toMatchObject({
        status: 'DEGRADED',
        members: [
          { id: 'h', healthStatus: 'DEGRADED' },
          { id: 'g', healthStatus: 'UNAVAILABLE' },
        ],
      });
    } finally {
      m.stop();
    }
  });
});

describe('HealthMonitor: one rule per state, for one HSM and for each HSM of a fleet', () => {
  const passing = (latencyMs: number) => () => Promise.resolve<HealthReport>({ status: 'ACTIVE', checkedAt: Date.now(), latencyMs });

  it('a slow passing check is DEGRADED, in the member that was slow', async () => {
    expect(await monitor({ h: hsm(passing(20)) }, 10_000).m.refresh()).toEqual({ status: 'DEGRADED', checkedAt: expect.any(Number), latencyMs: 20, detail: 'health check took 20 ms' });
    expect(await monitor({ h: hsm(passing(1)), g: hsm(passing(20)) }, 10_000).m.refresh()).toMatchObject({
      status: 'DEGRADED',
      members: [
        { id: 'h', healthStatus: 'ACTIVE' },
        { id: 'g', healthStatus: 'DEGRADED', detail: 'health check took 20 ms' },
      ],
    });
  });

  it('a check that fails (not by time) is UNAVAILABLE with its reason, and no timeout', async () => {
    const failing = hsm(() => Promise.reject(new Error('boom')));
    const report = await monitor({ h: failing }, 10_000).m.refresh();
    expect(report).toMatchObject({ status: 'UNAVAILABLE', detail: 'health check failed' });
    expect(report.timedOut).toBeUndefined();
  });

  it('a fleet timed out on every HSM is a timeout (GetHealthStatus: DependencyTimeoutException)', async () => {
    expect(await monitor({ h: hsm(), g: hsm() }).m.refresh()).toMatchObject({ status: 'UNAVAILABLE', timedOut: true });
  });
});
