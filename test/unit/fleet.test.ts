import { expect } from '@jest/globals';
import { configSchema } from '../../src/config/schema';
import { EngineError } from '../../src/engine/errors';
import { FleetEngine } from '../../src/engine/fleet';
import type { EngineStatus, GcmResult, HealthReport, HsmEngine } from '../../src/engine/types';
import { ProxyEvents } from '../../src/events';
import { HealthMonitor } from '../../src/health/monitor';
import { silentLogger } from '../../src/log';
import { Metrics } from '../../src/metrics';
import { useFakeTime } from '../support/clock';

/** Routing and breaker rules of the fleet over scripted engines (the real HSM path is test/fleet.test.ts). */
class Scripted implements HsmEngine {
  calls = 0;
  fail: EngineError | undefined;
  healthy = true;
  constructor(readonly id: string) {}
  async encrypt(): Promise<GcmResult> {
    this.calls++;
    if (this.fail) throw this.fail;
    return { iv: Buffer.alloc(12), ciphertext: Buffer.from(this.id), tag: Buffer.alloc(16) };
  }
  async decrypt(): Promise<Buffer> {
    this.calls++;
    if (this.fail) throw this.fail;
    return Buffer.from(this.id);
  }
  async checkKey() {
    if (this.fail?.kind === 'key-not-found') throw this.fail;
  }
  async healthCheck(): Promise<HealthReport> {
    return { status: this.healthy ? 'ACTIVE' : 'UNAVAILABLE', checkedAt: Date.now(), latencyMs: 1 };
  }
  async warmUp() {}
  info() {
    return { vendor: 'v', id: `${this.id}-token/serial`, model: `m-${this.id}` };
  }
  poolStats() {
    return { size: 4, inUse: 0, idle: 4, waiting: 0 };
  }
  isConnected() {
    return true;
  }
  status(): EngineStatus {
    return { state: 'connected' };
  }
  async close() {}
}

function fleet(placement: Record<string, string[]> = {}, events?: ProxyEvents) {
  const a = new Scripted('a');
  const b = new Scripted('b');
  const f = new FleetEngine(
    [
      { id: 'a', engine: a },
      { id: 'b', engine: b },
    ],
    { breakerFailures: 3, probeIntervalMs: 20, checkBudgetMs: 10_000, logger: silentLogger, events },
  );
  f.place(new Map(Object.entries({ k: undefined, ...placement })));
  return { a, b, f };
}
/** The fleet's health as the proxy's monitor computes it (src/health/state.ts). */
const healthOf = (f: FleetEngine) => new HealthMonitor(f, { cacheMs: 0, degradedAboveMs: 100 }, silentLogger).refresh();
const enc = (f: FleetEngine, label = 'k') => f.encrypt(label, Buffer.alloc(1), Buffer.alloc(0));

afterEach(() => jest.useRealTimers());

it('spreads an idle fleet over both HSMs', async () => {
  const { a, b, f } = fleet();
  for (let i = 0; i < 10; i++) await enc(f);
  expect([a.calls, b.calls]).toEqual([5, 5]);
  await f.close();
});

it('sends work to the HSM with less outstanding', async () => {
  const { a, b, f } = fleet();
  let release!: () => void;
  a.encrypt = () => new Promise((r) => (release = () => r({ iv: Buffer.alloc(12), ciphertext: Buffer.alloc(0), tag: Buffer.alloc(16) })));
  const slow = enc(f);
  for (let i = 0; i < 4; i++) await enc(f);
  expect(b.calls).toBeGreaterThanOrEqual(4);
  release();
  await slow;
  await f.close();
});

it.each(['unavailable', 'device', 'busy', 'key-not-found'] as const)('retries %s once on the other HSM', async (kind) => {
  const { a, b, f } = fleet();
  a.fail = new EngineError(kind, 'x');
  for (let i = 0; i < 4; i++) expect((await enc(f)).ciphertext.toString()).toBe('b');
  expect(b.calls).toBe(4);
  b.fail = new EngineError(kind, 'y');
  await expect(enc(f)).rejects.toMatchObject({ kind });
  await f.close();
});

it.each(['tag-mismatch', 'key-unusable'] as const)('never retries %s', async (kind) => {
  const { a, b, f } = fleet();
  a.fail = b.fail = new EngineError(kind, 'x');
  await expect(f.decrypt('k', Buffer.alloc(12), Buffer.alloc(0), Buffer.alloc(1), Buffer.alloc(16))).rejects.toMatchObject({ kind });
  expect(a.calls + b.calls).toBe(1);
  await f.close();
});

it('keeps a placed version on its HSMs; one placed nowhere in the fleet is key-not-found', async () => {
  const { a, b, f } = fleet({ k: ['b'], gone: [] });
  for (let i = 0; i < 3; i++) await enc(f);
  expect([a.calls, b.calls]).toEqual([0, 3]);
  await expect(enc(f, 'gone')).rejects.toMatchObject({ kind: 'key-not-found' });
  await f.close();
});

it('opens the breaker after repeated failures, answers DEGRADED, and closes it once a probe passes', async () => {
  useFakeTime();
  const events = new ProxyEvents();
  const metrics = new Metrics(false);
  metrics.attach(events, { pool: () => ({ inUse: 0, idle: 0, waiting: 0 }), credentials: () => [] });
  const breakerOpen = async () => (await metrics.breakerOpen.get()).values.map((v) => [v.labels.hsm_id, v.value]);
  const { a, b, f } = fleet({}, events);
  a.fail = new EngineError('device', 'x');
  a.healthy = false;
  for (let i = 0; i < 8; i++) await enc(f);
  expect(f.memberStats().find((m) => m.id === 'a')?.breaker).toBe('open');
  expect(await breakerOpen()).toEqual([['a', 1]]);
  const callsWhileOpen = a.calls;
  for (let i = 0; i < 4; i++) await enc(f);
  expect(a.calls).toBe(callsWhileOpen);
  expect(await healthOf(f)).toMatchObject({ status: 'DEGRADED', members: [{ id: 'a', healthStatus: 'UNAVAILABLE' }, { id: 'b', healthStatus: 'ACTIVE' }] });
  // Probes every 20 ms: one that fails keeps the breaker open, the first that passes closes it.
  await jest.advanceTimersByTimeAsync(20);
  expect(f.memberStats().find((m) => m.id === 'a')?.breaker).toBe('open');
  a.fail = undefined;
  a.healthy = true;
  await jest.advanceTimersByTimeAsync(19);
  expect(f.memberStats().find((m) => m.id === 'a')?.breaker).toBe('open');
  await jest.advanceTimersByTimeAsync(1);
  expect(f.memberStats().find((m) => m.id === 'a')?.breaker).toBe('closed');
  expect(await breakerOpen()).toEqual([['a', 0]]);
  expect((await healthOf(f)).status).toBe('ACTIVE');
  b.healthy = false;
  a.healthy = false;
  expect((await healthOf(f)).status).toBe('UNAVAILABLE');
  await f.close();
});

describe('a fleet of one', () => {
  function solo() {
    const a = new Scripted('a');
    const f = new FleetEngine([{ id: 'a', engine: a }], { breakerFailures: 3, probeIntervalMs: 20, checkBudgetMs: 10_000, logger: silentLogger });
    f.place(new Map([['k', undefined]]));
    return { a, f };
  }

  it('hands each request straight to its HSM: the same promise, no routing in between', async () => {
    const { a, f } = solo();
    const sealed = Promise.resolve<GcmResult>({ iv: Buffer.alloc(12), ciphertext: Buffer.alloc(0), tag: Buffer.alloc(16) });
    a.encrypt = () => sealed;
    expect(f.encrypt('k', Buffer.alloc(1), Buffer.alloc(0))).toBe(sealed);
    const opened = Promise.resolve(Buffer.from('x'));
    a.decrypt = () => opened;
    expect(f.decrypt('k', Buffer.alloc(12), Buffer.alloc(0), Buffer.alloc(1), Buffer.alloc(16))).toBe(opened);
    await f.close();
  });

  it('never takes its one HSM away: no breaker, its status and reason as the HSM gives them', async () => {
    const { a, f } = solo();
    a.fail = new EngineError('device', 'x');
    for (let i = 0; i < 8; i++) await expect(enc(f)).rejects.toMatchObject({ kind: 'device' });
    expect(a.calls).toBe(8);
    expect(f.memberStats()).toMatchObject([{ id: 'a', breaker: 'closed', missing: [] }]);
    a.status = () => ({ state: 'disconnected', reason: 'C_Login: CKR_PIN_INCORRECT' });
    expect(f.status()).toEqual({ state: 'disconnected', reason: 'C_Login: CKR_PIN_INCORRECT' });
    expect(f.info()).toEqual(a.info());
    await f.close();
  });

  it('answers health as its HSM: no member list, the state and detail of its own check', async () => {
    const { a, f } = solo();
    expect(await healthOf(f)).toEqual({ status: 'ACTIVE', checkedAt: expect.any(Number), latencyMs: 1 });
    a.healthy = false;
    expect(await healthOf(f)).toEqual({ status: 'UNAVAILABLE', checkedAt: expect.any(Number), latencyMs: 1 });
    await f.close();
  });
});

describe('hsms configuration', () => {
  const hsm = { modulePath: '/m.so', tokenLabel: 't', pin: { value: 'p' } };
  const base = {
    server: { insecurePlainHttp: true },
    keyStores: [{ name: 'ks', credentials: [{ accessKeyId: 'AAAAAAAAAAAAAAAAAAAA', secretAccessKey: { value: 'a'.repeat(43) } }] }],
  };
  const parse = (extra: object) => configSchema.safeParse({ ...base, ...extra });

  it('makes the single hsm section a fleet of one, named by its token label', () => {
    const r = parse({ hsm });
    expect(r.success && r.data.hsms.map((h) => h.id)).toEqual(['t']);
    expect(r.success && r.data.hsm.tokenLabel).toBe('t');
  });

  it('takes a list, and config.hsm is its first member', () => {
    const r = parse({ hsms: [{ ...hsm, id: 'a' }, { ...hsm, id: 'b', tokenLabel: 'u' }] });
    expect(r.success && [r.data.hsm.tokenLabel, r.data.hsms.length]).toEqual(['t', 2]);
  });

  it.each([
    ['both', { hsm, hsms: [{ ...hsm, id: 'a' }] }, 'exactly one'],
    ['neither', {}, 'exactly one'],
    ['duplicate ids', { hsms: [{ ...hsm, id: 'a' }, { ...hsm, id: 'a', tokenLabel: 'u' }] }, 'unique'],
    ['one token twice', { hsms: [{ ...hsm, id: 'a' }, { ...hsm, id: 'b' }] }, 'same token'],
    ['more than 10', { hsms: Array.from({ length: 11 }, (_, i) => ({ ...hsm, id: `h${i}`, tokenLabel: `t${i}` })) }, ''],
    [
      'a version on an unknown HSM',
      { hsms: [{ ...hsm, id: 'a' }], groups: [{ name: 'g', policy: { rules: [] }, keys: [{ id: 'k', versions: [{ version: 1, label: 'l', hsms: ['zz'] }] }] }] },
      'no HSM with id "zz"',
    ],
  ])('refuses %s', (_name, extra, message) => {
    const r = parse(extra);
    expect(r.success).toBe(false);
    expect(r.error?.issues.map((i) => i.message).join('; ')).toContain(message);
  });
});
