import type { CryptoEngine, HealthReport } from '../../src/engine/types';
import { ProxyEvents } from '../../src/events';
import { HealthMonitor } from '../../src/health/monitor';
import { silentLogger } from '../../src/log';
import { useFakeTime } from '../support/clock';

/** An engine whose deep check never answers within the monitor's budget: a slow HSM. */
const slowEngine = { healthCheck: () => new Promise<HealthReport>(() => undefined) } as unknown as CryptoEngine;

function monitor(): { m: HealthMonitor; events: ProxyEvents } {
  const events = new ProxyEvents();
  return { m: new HealthMonitor(slowEngine, { cacheMs: 0, timeoutMs: 30, degradedAboveMs: 15 }, silentLogger, events), events };
}

const op = (seconds: number): { hsm: string; operation: 'encrypt'; seconds: number; ok: boolean } => ({ hsm: 'h', operation: 'encrypt', seconds, ok: true });

/** One deep check, run to its 30 ms budget on the fake clock. */
async function check(m: HealthMonitor): Promise<HealthReport['status']> {
  const report = m.refresh();
  await jest.advanceTimersByTimeAsync(30);
  return (await report).status;
}

beforeEach(() => useFakeTime());
afterEach(() => jest.useRealTimers());

describe('HealthMonitor: customer calls as evidence that a timed-out check is load, not a broken HSM', () => {
  it('a fast customer call after start() turns a timed-out check into DEGRADED', async () => {
    const { m, events } = monitor();
    m.start();
    try {
      events.publish('hsm.operation', op(0.002));
      expect(await check(m)).toBe('DEGRADED');
    } finally {
      m.stop();
    }
  });

  it('calls before start() (the start-up warm-ups) are no evidence', async () => {
    const { m, events } = monitor();
    events.publish('hsm.operation', op(0.002));
    m.start();
    try {
      expect(await check(m)).toBe('UNAVAILABLE');
    } finally {
      m.stop();
    }
  });

  it('a call slower than the check budget is no evidence: it shows the same slow HSM', async () => {
    const { m, events } = monitor();
    m.start();
    try {
      events.publish('hsm.operation', op(0.3));
      expect(await check(m)).toBe('UNAVAILABLE');
    } finally {
      m.stop();
    }
  });

  it('evidence lasts evidenceMs (5 s by default), counted to the end of the check', async () => {
    const { m, events } = monitor();
    m.start();
    try {
      events.publish('hsm.operation', op(0.002));
      // The check ends 30 ms after it starts: started 4,969 ms after the call, it ends 1 ms inside the window.
      await jest.advanceTimersByTimeAsync(4969);
      expect(await check(m)).toBe('DEGRADED');
      events.publish('hsm.operation', op(0.002));
      await jest.advanceTimersByTimeAsync(4970);
      expect(await check(m)).toBe('UNAVAILABLE');
    } finally {
      m.stop();
    }
  });
});
