import type { CryptoEngine, HealthReport } from '../../src/engine/types';
import { ProxyEvents } from '../../src/events';
import { HealthMonitor } from '../../src/health/monitor';
import { silentLogger } from '../../src/log';
import { useFakeTime } from '../support/clock';

/** An engine whose deep check never answers within the monitor's budget: a slow HSM. */
const slowEngine = { healthCheck: () => new Promise<HealthReport>(() => undefined) } as unknown as CryptoEngine;

const op = (seconds: number): { hsm: string; operation: 'encrypt'; seconds: number; ok: boolean } => ({ hsm: 'h', operation: 'encrypt', seconds, ok: true });

let events: ProxyEvents;
let m: HealthMonitor;

/** One deep check, run to its 30 ms budget on the fake clock. */
async function check(): Promise<HealthReport['status']> {
  const report = m.refresh();
  await jest.advanceTimersByTimeAsync(30);
  return (await report).status;
}

beforeEach(() => {
  useFakeTime();
  events = new ProxyEvents();
  m = new HealthMonitor(slowEngine, { cacheMs: 0, timeoutMs: 30, degradedAboveMs: 15 }, silentLogger, events);
});
afterEach(() => {
  m.stop();
  jest.useRealTimers();
});

describe('HealthMonitor: customer calls as evidence that a timed-out check is load, not a broken HSM', () => {
  it('a fast customer call after start() turns a timed-out check into DEGRADED', async () => {
    m.start();
    events.publish('hsm.operation', op(0.002));
    expect(await check()).toBe('DEGRADED');
  });

  it('calls before start() (the start-up warm-ups) are no evidence', async () => {
    events.publish('hsm.operation', op(0.002));
    m.start();
    expect(await check()).toBe('UNAVAILABLE');
  });

  it('a call slower than the check budget is no evidence: it shows the same slow HSM', async () => {
    m.start();
    events.publish('hsm.operation', op(0.3));
    expect(await check()).toBe('UNAVAILABLE');
  });

  it('evidence lasts evidenceMs (5 s by default), counted to the end of the check', async () => {
    m.start();
    events.publish('hsm.operation', op(0.002));
    // The check ends 30 ms after it starts: started 4,969 ms after the call, it ends 1 ms inside the window.
    await jest.advanceTimersByTimeAsync(4969);
    expect(await check()).toBe('DEGRADED');
    events.publish('hsm.operation', op(0.002));
    await jest.advanceTimersByTimeAsync(4970);
    expect(await check()).toBe('UNAVAILABLE');
  });
});
