import type { CryptoEngine, HealthReport } from '../../src/engine/types';
import { ProxyEvents } from '../../src/events';
import { HealthMonitor } from '../../src/health/monitor';
import { silentLogger } from '../../src/log';

/** An engine whose deep check never answers within the monitor's budget: a slow HSM. */
const slowEngine = { healthCheck: () => new Promise<HealthReport>(() => undefined) } as unknown as CryptoEngine;

function monitor(): { m: HealthMonitor; events: ProxyEvents } {
  const events = new ProxyEvents();
  return { m: new HealthMonitor(slowEngine, { cacheMs: 0, timeoutMs: 30, degradedAboveMs: 15 }, silentLogger, events), events };
}

const op = (seconds: number): { hsm: string; operation: 'encrypt'; seconds: number; ok: boolean } => ({ hsm: 'h', operation: 'encrypt', seconds, ok: true });

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
      expect((await m.refresh()).status).toBe('UNAVAILABLE');
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
});
