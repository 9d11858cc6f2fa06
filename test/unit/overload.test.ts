import { OverloadGuard } from '../../src/http/overload';
import { Metrics } from '../../src/metrics';
import { useFakeTime } from '../support/clock';
import { until } from '../support/promises';

/** Timer observations fed by hand: (how late, when it was due). */
function feed(guard: OverloadGuard, samples: [lateMs: number, due: number][]): void {
  for (const [late, due] of samples) guard.sample(late, due);
}

describe('OverloadGuard (event-loop standing delay, CoDel style)', () => {
  afterEach(() => jest.useRealTimers());

  it('a standing delay: every sample above target for the interval', () => {
    const g = new OverloadGuard(undefined, { targetMs: 20, intervalMs: 100 });
    feed(g, [
      [25, 0],
      [25, 35],
      [25, 70],
    ]);
    expect(g.eventLoopOverloaded()).toBe(false); // 95 ms of late samples: not yet the interval
    feed(g, [[25, 105]]);
    expect(g.eventLoopOverloaded()).toBe(true);
  });

  it('one on-time sample ends it', () => {
    const g = new OverloadGuard(undefined, { targetMs: 20, intervalMs: 100 });
    feed(g, [
      [50, 0],
      [50, 60],
      [50, 120],
    ]);
    expect(g.eventLoopOverloaded()).toBe(true);
    feed(g, [[3, 180]]);
    expect(g.eventLoopOverloaded()).toBe(false);
  });

  it('a single long pause (a GC, a slow call) is a burst, not a standing queue', () => {
    const g = new OverloadGuard(undefined, { targetMs: 20, intervalMs: 100 });
    feed(g, [
      [2, 0],
      [400, 10],
      [1, 420],
    ]);
    expect(g.eventLoopOverloaded()).toBe(false);
    feed(g, [[400, 430]]);
    expect(g.eventLoopOverloaded()).toBe(false);
  });

  it('delays under the target never count', () => {
    const g = new OverloadGuard(undefined, { targetMs: 20, intervalMs: 100 });
    feed(g, Array.from({ length: 50 }, (_, i): [number, number] => [19, i * 30]));
    expect(g.eventLoopOverloaded()).toBe(false);
  });

  it('reports overloaded for a while after a shed, and counts sheds by key store and reason', async () => {
    useFakeTime();
    const metrics = new Metrics(false);
    const g = new OverloadGuard(metrics, { reportForMs: 50 });
    expect(g.overloaded()).toBe(false);
    g.shed('ks', 'hsm_wait');
    g.shed('ks', 'event_loop');
    g.shed('ks', 'event_loop');
    expect(g.overloaded()).toBe(true);
    jest.advanceTimersByTime(49);
    expect(g.overloaded()).toBe(true);
    jest.advanceTimersByTime(1);
    expect(g.overloaded()).toBe(false);
    const text = await metrics.registry.metrics();
    expect(text).toContain('xks_shed_total{key_store="ks",reason="hsm_wait"} 1');
    expect(text).toContain('xks_shed_total{key_store="ks",reason="event_loop"} 2');
  });

  // Real time: what the sampler measures is how late a real timer runs on this event loop.
  it('the sampler sees a blocked event loop', async () => {
    const g = new OverloadGuard(undefined, { targetMs: 20, intervalMs: 100, sampleMs: 5 });
    g.start();
    try {
      // Block the loop in 40 ms slices, yielding just long enough for the sampler's timer to run.
      for (let i = 0; i < 8; i++) {
        const end = performance.now() + 40;
        while (performance.now() < end);
        await new Promise((r) => setImmediate(r));
      }
      expect(g.eventLoopOverloaded()).toBe(true);
      // Free again: the first on-time sample clears it.
      expect(await until(() => g.eventLoopOverloaded(), (o) => !o, 500, 10)).toBe(false);
    } finally {
      g.stop();
    }
  });
});
