import { expect } from '@jest/globals';
import { pbkdf2, randomBytes } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import * as pkcs11js from 'pkcs11js';
import { createLogger, type Logger } from '../src/log';
import type { HsmConfig } from '../src/engine/module';
import { Pkcs11Engine } from '../src/engine/pkcs11-engine';
import type { ProxyEventMap } from '../src/events';
import { hsmConfig, kindOf, openEngine } from './support/engine';
import { useFakeTime } from './support/clock';
import { until } from './support/promises';
import { get, keyMetadata, keyStoreWithKeys, newCredential, send, startProxy, testConfig } from './support/proxy';
import { MODULE, testHsm } from './support/hsm';

/** The engine alone on the real SoftHSM2 test token: what it learns at connect, its error kinds, its misconfiguration reports. */
const h = testHsm();
const softhsm = (over: Partial<HsmConfig> = {}): HsmConfig =>
  hsmConfig({ modulePath: MODULE, tokenLabel: h.tokenLabel, environment: h.environment, ...over });
const EMPTY = Buffer.alloc(0);

/** A full garbage collection on demand (the suite runs without --expose-gc). */
function collector(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

/** A logger that counts the lines whose message starts so. */
function countingLogger(msg: string): { logger: Logger; count: () => number } {
  let n = 0;
  const logger = createLogger('info', { write: (line: string) => void ((JSON.parse(line) as { msg?: string }).msg?.startsWith(msg) && n++) });
  return { logger, count: () => n };
}

// The module is process-wide: each test closes its engine (C_Finalize) before the next opens one.
describe('engine on SoftHSM2', () => {
  let opened: Pkcs11Engine | undefined;
  afterEach(async () => {
    jest.useRealTimers();
    await opened?.close();
    opened = undefined;
  });
  async function open(...args: Parameters<typeof openEngine>) {
    const r = await openEngine(...args);
    opened = r.engine;
    return r;
  }

  it('connects with read-only sessions and reports connected', async () => {
    const flags: number[] = [];
    const { engine, faults, states } = await open(softhsm(), h.pin);
    expect(engine.status()).toEqual({ state: 'connected' });
    expect(states).toEqual([{ hsm: h.tokenLabel, state: 'connected' }]);
    faults.inspect = (method, args) => void (method === 'C_OpenSession' && flags.push(args[1] as number));
    faults.fail = { C_Encrypt: 'CKR_FUNCTION_FAILED' }; // the session is replaced: the new one is opened like the others
    expect(await kindOf(engine.encrypt('test-key-1', Buffer.alloc(8), EMPTY))).toBe('device');
    expect(flags).toEqual([pkcs11js.CKF_SERIAL_SESSION]);
  });

  it('falls back to read-write sessions when the module refuses read-only ones', async () => {
    const { faults, create } = (await import('../testbed/faulty-module')).faultyModule();
    faults.inspect = (method, args) => (method === 'C_OpenSession' && ((args[1] as number) & pkcs11js.CKF_RW_SESSION) === 0 ? 'CKR_FUNCTION_FAILED' : undefined);
    const { engine } = await open(softhsm(), h.pin, { createModule: create });
    expect(engine.status().state).toBe('connected');
    const sealed = await engine.encrypt('test-key-1', Buffer.from('hello'), EMPTY);
    expect((await engine.decrypt('test-key-1', sealed.iv, EMPTY, sealed.ciphertext, sealed.tag)).toString()).toBe('hello');
  });

  it('encrypts an empty plaintext with Init+Final, since SoftHSM2 refuses single-part C_Encrypt on empty input', async () => {
    const { engine, faults } = await open(softhsm({ asyncCalls: false }), h.pin);
    faults.calls = {};
    const sealed = await engine.encrypt('test-key-1', EMPTY, Buffer.from('aad'));
    expect(faults.calls).toMatchObject({ C_EncryptInit: 1, C_EncryptFinal: 1 });
    expect(faults.calls.C_Encrypt).toBeUndefined();
    expect(sealed.ciphertext.length).toBe(0);
    expect(sealed.tag.length).toBe(16);
    expect((await engine.decrypt('test-key-1', sealed.iv, Buffer.from('aad'), sealed.ciphertext, sealed.tag)).length).toBe(0);
    expect(await kindOf(engine.decrypt('test-key-1', sealed.iv, Buffer.from('aaX'), sealed.ciphertext, sealed.tag))).toBe('tag-mismatch');
  });

  it('gcmParams v230 is refused on SoftHSM2, which takes only the 48-byte v2.40 CK_GCM_PARAMS', async () => {
    const { engine } = await open(softhsm({ gcmParams: 'v230' }), h.pin);
    // The patched binding's 40-byte structure reaches SoftHSM2, which refuses it for every IV source the
    // probe tries (an unpatched one is refused before the HSM sees it).
    expect(engine.status()).toEqual({
      state: 'misconfigured',
      reason: expect.stringMatching(/^AES-GCM probe: the HSM refused every IV source: proxy .*: C_EncryptInit returned CKR_ARGUMENTS_BAD; hsm-writes-zeroed .*; hsm-appends .*: C_EncryptInit returned CKR_ARGUMENTS_BAD$/),
    });
  });

  it('reports its failures as engine error kinds', async () => {
    const { engine } = await open(softhsm({ sessionPoolSize: 1 }), h.pin, { maxQueue: 0 });
    expect(await kindOf(engine.encrypt('no-such-label', Buffer.alloc(8), EMPTY))).toBe('key-not-found');
    expect(await kindOf(engine.encrypt('extractable-key', Buffer.alloc(8), EMPTY))).toBe('key-unusable');
    const sealed = await engine.encrypt('test-key-1', Buffer.alloc(8), EMPTY);
    sealed.tag[0]! ^= 1;
    expect(await kindOf(engine.decrypt('test-key-1', sealed.iv, EMPTY, sealed.ciphertext, sealed.tag))).toBe('tag-mismatch');
    const first = engine.encrypt('test-key-1', Buffer.alloc(8), EMPTY);
    expect(await kindOf(engine.encrypt('test-key-1', Buffer.alloc(8), EMPTY))).toBe('busy');
    await first;
  });

  it('keeps every buffer an off-loop call reads alive until the call has answered (hsm.asyncCalls)', async () => {
    // pkcs11js hands the native call raw pointers to the input and output Buffers and keeps only the
    // callback (which holds the output): the caller must hold the input until the call answers, or a
    // garbage collection while the call waits for a libuv thread frees memory the HSM then reads.
    const { engine, faults } = await open(softhsm({ asyncCalls: true }), h.pin);
    // 4300 bytes: above Buffer's pool, so each buffer has memory of its own that a collection frees.
    const sealed = await engine.encrypt('test-key-1', randomBytes(4300), EMPTY);
    const gc = collector();
    for (const [method, call] of [
      ['C_Encrypt', () => engine.encrypt('test-key-1', randomBytes(4300), EMPTY)],
      ['C_Decrypt', () => engine.decrypt('test-key-1', sealed.iv, EMPTY, Buffer.from(sealed.ciphertext), Buffer.from(sealed.tag))],
    ] as const) {
      const inputs: WeakRef<object>[] = [];
      faults.inspect = (m, args) => void (m === method && typeof args[3] === 'function' && inputs.push(new WeakRef(args[1] as object)));
      // Every libuv thread busy for a while: the call waits in the queue, as it does under load.
      const busy = Array.from({ length: 4 * (Number(process.env.UV_THREADPOOL_SIZE) || 4) }, () => new Promise((resolve) => pbkdf2('p', 's', 100_000, 32, 'sha256', resolve)));
      const answer = call();
      await new Promise((resolve) => setImmediate(resolve));
      gc();
      expect(inputs.map((r) => r.deref() !== undefined)).toEqual([true]);
      await expect(answer).resolves.toBeDefined();
      await Promise.all(busy);
    }
    faults.inspect = undefined;
  });

  it('confirms a key on the token at most once per keyCheckCacheMs, and never from the cache for a missing key', async () => {
    useFakeTime();
    const { engine, faults } = await open(softhsm({ keyCheckCacheMs: 60_000 }), h.pin);
    await engine.checkKey('test-key-1');
    const reads = faults.calls.C_GetAttributeValue ?? 0;
    await engine.checkKey('test-key-1');
    jest.advanceTimersByTime(59_999);
    await engine.checkKey('test-key-1');
    expect(faults.calls.C_GetAttributeValue ?? 0).toBe(reads);
    jest.advanceTimersByTime(1);
    await engine.checkKey('test-key-1');
    expect(faults.calls.C_GetAttributeValue ?? 0).toBeGreaterThan(reads);
    // A failed check is not remembered: every call asks the HSM again.
    expect(await kindOf(engine.checkKey('no-such-label'))).toBe('key-not-found');
    const finds = faults.calls.C_FindObjectsInit ?? 0;
    expect(await kindOf(engine.checkKey('no-such-label'))).toBe('key-not-found');
    expect(faults.calls.C_FindObjectsInit ?? 0).toBe(finds + 1);
  });

  it('publishes hsm.operation for every call, ok or not, named by the token label', async () => {
    const { engine, events } = await open(softhsm(), h.pin);
    const seen: ProxyEventMap['hsm.operation'][] = [];
    events.subscribe('hsm.operation', (m) => seen.push(m));
    await engine.encrypt('test-key-1', Buffer.alloc(8), EMPTY);
    await kindOf(engine.decrypt('no-such-label', Buffer.alloc(12), EMPTY, EMPTY, Buffer.alloc(16)));
    expect(seen).toEqual([
      { hsm: h.tokenLabel, operation: 'encrypt', ok: true, seconds: expect.any(Number) },
      { hsm: h.tokenLabel, operation: 'decrypt', ok: false, seconds: expect.any(Number) },
    ]);
    expect(seen[0]!.seconds).toBeGreaterThan(0);
  });

  it('a wrong PIN is a misconfiguration naming C_Login and CKR_PIN_INCORRECT, retried with backoff, not in a loop', async () => {
    useFakeTime();
    const { logger, count } = countingLogger('HSM misconfigured');
    const { engine, faults, states } = await open(softhsm({ reconnectBackoffMs: 100 }), 'wrong-pin', { logger });
    expect(engine.isConnected()).toBe(false);
    expect(engine.status()).toEqual({ state: 'misconfigured', reason: 'C_Login returned CKR_PIN_INCORRECT' });
    expect(states).toContainEqual({ hsm: h.tokenLabel, state: 'misconfigured', reason: 'C_Login returned CKR_PIN_INCORRECT' });
    expect(await kindOf(engine.encrypt('test-key-1', Buffer.alloc(8), EMPTY))).toBe('unavailable');
    expect((await engine.healthCheck()).status).toBe('UNAVAILABLE');
    const logins = faults.calls.C_Login ?? 0;
    const failures = count();
    // An attempt the fake timer starts runs its calls on the control thread, in real time: wait until it
    // has failed (its log line comes just before the next backoff is armed), or, when none is due, long
    // enough that one started too early would show.
    const attemptsAfter = async (ms: number, due: boolean): Promise<number> => {
      const seen = count();
      await jest.advanceTimersByTimeAsync(ms);
      await until(count, (n) => n > seen, due ? 10_000 : 300);
      expect(count() - failures).toBe((faults.calls.C_Login ?? 0) - logins);
      return count() - failures;
    };
    // Twice reconnectBackoffMs after the failed attempts at open, then doubling: 200, 400, 800 ms apart.
    expect(await attemptsAfter(199, false)).toBe(0);
    expect(await attemptsAfter(1, true)).toBe(1);
    expect(await attemptsAfter(399, false)).toBe(1);
    expect(await attemptsAfter(1, true)).toBe(2);
    expect(await attemptsAfter(799, false)).toBe(2);
    expect(await attemptsAfter(1, true)).toBe(3);
  });

  it('a missing token label is a misconfiguration that names the label', async () => {
    const { engine } = await open(softhsm({ tokenLabel: 'no-such-token' }), h.pin);
    expect(engine.status()).toEqual({ state: 'misconfigured', reason: 'C_GetSlotList: no token labelled "no-such-token" is present' });
  });

  it('libraryParameters reach C_Initialize: SoftHSM2 refuses any, and that is reported as C_Initialize returned CKR_ARGUMENTS_BAD', async () => {
    const { engine } = await open(softhsm({ libraryParameters: 'anything' }), h.pin);
    expect(engine.status()).toEqual({ state: 'misconfigured', reason: 'C_Initialize returned CKR_ARGUMENTS_BAD' });
  });

  it('recovers by itself once the misconfiguration is gone (the token offers AES-GCM again)', async () => {
    const { faults, create } = (await import('../testbed/faulty-module')).faultyModule();
    faults.fail = { C_GetMechanismList: 'CKR_MECHANISM_INVALID' };
    useFakeTime();
    const { engine, states } = await open(softhsm(), h.pin, { createModule: create });
    expect(engine.status()).toEqual({ state: 'misconfigured', reason: 'C_GetMechanismList returned CKR_MECHANISM_INVALID' });
    faults.fail = {};
    // The next attempt, twice reconnectBackoffMs (50) after the failed ones at open.
    await jest.advanceTimersByTimeAsync(99);
    expect(engine.isConnected()).toBe(false);
    await jest.advanceTimersByTimeAsync(1);
    // The attempt's calls run on the control thread, in real time.
    expect(await until(() => engine.status(), (st) => st.state !== 'misconfigured')).toEqual({ state: 'connected' });
    expect(states.at(-1)).toEqual({ hsm: h.tokenLabel, state: 'connected' });
  });
});

describe('a proxy whose HSM is misconfigured', () => {
  it('starts, stays not ready, and answers key operations with InternalException', async () => {
    const cred = newCredential();
    const app = await startProxy(
      testConfig([keyStoreWithKeys('m', '/m', [cred], [{ id: 'k', label: 'test-key-1' }])], { hsm: { pin: { value: 'wrong-pin' } } } as never),
    );
    try {
      expect(app.engine.status()).toEqual({ state: 'misconfigured', reason: 'C_Login returned CKR_PIN_INCORRECT' });
      expect((await get(app.opsPort as number, '/readyz')).status).toBe(503);
      const r = await send(app.port, '/m/kms/xks/v1/keys/k/encrypt', { requestMetadata: keyMetadata('Encrypt'), plaintext: 'AAAA', encryptionAlgorithm: 'AES_GCM' }, cred);
      expect(r.status).toBe(500);
      expect(r.body).toEqual({ errorName: 'InternalException', errorMessage: 'the HSM is misconfigured' });
    } finally {
      await app.stop(100);
    }
  });
});
