import { expect } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ProxyConfigInput } from '../src/config/schema';
import { findTokenSlot } from '../src/engine/module';
import * as pkcs11 from 'pkcs11js';
import { stringify } from 'yaml';
import { AdminContext } from '../src/admin/context';
import { trustReplication, withFleet } from '../src/admin/fleet';
import { createKey, describeKey, rotateKey } from '../src/admin/keys';
import { ProxyApp } from '../src/app';
import { loadConfigFile } from '../src/config/load';
import { ConfigReloader } from '../src/config/reloader';
import { silentLogger } from '../src/log';
import { FleetToken, openFleetToken } from '../src/engine/replicate';
import { findSecretKeys, generateKek } from '../src/engine/token';
import { faultyModule, slotLoss } from '../testbed/faulty-module';
import { FLEET_WAIT_MS, Load, roundTrip } from './fleet-helpers';
import { until } from './support/promises';
import { testHsm } from './support/hsm';
import { get, keyStoreWithKeys, newCredential, send } from './support/proxy';

/**
 * Two real SoftHSM2 tokens behind one proxy, through one loaded module (PKCS#11 modules are process-wide:
 * the two HSMs share its C_Initialize). HSM "b" is lost the way a removed token is: every call on its
 * sessions, and opening new ones, fails with CKR_DEVICE_REMOVED (the fault-injecting module, scoped to
 * its slot); HSM "a" is untouched. (A p11-kit-remoted second HSM would be the better shape, but jest
 * gives test code a copy of process.env, so P11_KIT_SERVER_ADDRESS never reaches the client library.)
 */
const cred = newCredential();
const P = '/f/kms/xks/v1';
const health = { requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' } };

type Token = { id: string; modulePath: string; environment: Record<string, string>; tokenLabel: string; pin: string; soPin: string };
let tokens: Token[];
let app: ProxyApp;
let dir: string;
let configFile: string;
let ctx: AdminContext;
let reloader: ConfigReloader;
const { faults, create } = faultyModule();
/** Makes HSM b's slot "removed", or brings it back (undefined). */
const lose = slotLoss(faults);

/** A token of its own in the run's SoftHSM2 token directory (the configuration the process already has). */
function newToken(id: string): Token {
  const t = testHsm();
  const token = { id, modulePath: t.modulePath, environment: t.environment, tokenLabel: `fleet-${id}-${randomBytes(4).toString('hex')}`, pin: randomBytes(8).toString('hex'), soPin: randomBytes(8).toString('hex') };
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', token.tokenLabel, '--pin', token.pin, '--so-pin', token.soPin], { env: { ...process.env, ...t.environment }, stdio: 'ignore' });
  return token;
}



/** Round trips on k1 from `clients` concurrent clients (test/fleet-helpers.ts). */
const load = (clients: number): Load => new Load(clients, () => roundTrip(app.port, P, 'k1', cred));

const opsPerHsm = async (): Promise<Record<string, number>> => {
  const text = (await get(app.opsPort as number, '/metrics')).text;
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/xks_hsm_operation_duration_seconds_count\{operation="(?:encrypt|decrypt)",hsm_id="([^"]+)"\} (\d+)/g)) {
    out[m[1] as string] = (out[m[1] as string] ?? 0) + Number(m[2]);
  }
  return out;
};

beforeAll(async () => {
  tokens = [newToken('a'), newToken('b')];
  const [a, b] = tokens as [Token, Token];
  dir = mkdtempSync(join(tmpdir(), 'xks-fleet-'));
  configFile = join(dir, 'config.yaml');
  for (const t of tokens) {
    const s = openFleetToken(t, t.pin);
    try {
      generateKek(s, 'health-key');
    } finally {
      s.close();
    }
  }
  const hsm = (h: Token) => ({
    id: h.id,
    modulePath: h.modulePath,
    environment: h.environment,
    tokenLabel: h.tokenLabel,
    pin: { value: h.pin },
    sessionPoolSize: 4,
    healthKeyLabel: 'health-key',
    healthCacheMs: 200,
    reconnectBackoffMs: 50,
  });
  const { keyStore, group } = keyStoreWithKeys('f', '/f', [cred], [
    // A version placed on one HSM only (keys[].versions[].hsms).
    { id: 'k2', versions: [{ version: 1, label: 'xks-k2-v1', hsms: ['a'] }] },
  ]);
  const config: ProxyConfigInput = {
    server: { host: '127.0.0.1', port: 0, insecurePlainHttp: true },
    ops: { host: '127.0.0.1', port: 0 },
    limits: { deadlineMs: 2000 },
    hsms: [hsm(a), hsm(b)],
    keyStores: [keyStore],
    groups: [group],
  };
  writeFileSync(configFile, stringify(config));
  ctx = new AdminContext(configFile);

  // The security officer's step, then xks-admin's key create: generated on a, replicated to b.
  expect(trustReplication(ctx, 'a', 'b', a.soPin)).toEqual({ source: 'a', target: 'b', trusted: true });
  createKey(ctx, { group: group.name, id: 'k1', usage: ['ENCRYPT', 'DECRYPT'] });
  withFleet(ctx, ([ta]) => generateKek((ta as FleetToken).token, 'xks-k2-v1'));
  const runtime = loadConfigFile(configFile);
  app = await ProxyApp.start({ runtime, logger: silentLogger, createModule: create });
  // As src/process.ts wires it: an applied reload reaches the engine through config.reload.
  reloader = new ConfigReloader(configFile, runtime, (next) => app.setRuntime(next), silentLogger, app.events);
}, 60_000);

afterAll(async () => {
  reloader?.dispose();
  lose(undefined);
  await app?.stop(1000);
  rmSync(dir, { recursive: true, force: true });
});

it('xks-admin puts key versions on every HSM, and key describe says where each lives', async () => {
  expect(describeKey(ctx, 'k1')).toMatchObject({ versions: [{ version: 1, label: 'xks-k1-v1', presentOn: ['a', 'b'] }] });
  rotateKey(ctx, 'k1');
  expect(reloader.reload('test')).toBe(true);
  expect(describeKey(ctx, 'k1')).toMatchObject({
    currentVersion: 2,
    versions: [
      { version: 1, presentOn: ['a', 'b'] },
      { version: 2, label: 'xks-k1-v2', presentOn: ['a', 'b'] },
    ],
  });
  expect(describeKey(ctx, 'k2')).toMatchObject({ versions: [{ version: 1, hsms: ['a'], presentOn: ['a'] }] });
  // No copy of a replicated version can leave its HSM any more.
  withFleet(ctx, (fleet) => {
    for (const { token } of fleet) {
      const [key] = findSecretKeys(token, 'xks-k1-v2');
      const [extractable, sensitive] = token.mod.C_GetAttributeValue(token.session, key!, [{ type: pkcs11.CKA_EXTRACTABLE }, { type: pkcs11.CKA_SENSITIVE }]);
      expect([extractable!.value[0], sensitive!.value[0]]).toEqual([0, 1]);
    }
  });
  for (let i = 0; i < 10; i++) expect(await roundTrip(app.port, P, 'k1', cred)).toBeUndefined();
});

const fleetHealth = async () => (await send(app.port, `${P}/health`, health, cred)).body as { ekmFleetDetails?: { id: string; healthStatus: string }[]; errorName?: string };

it('lists both HSMs in GetHealthStatus, each ACTIVE', async () => {
  const h = await until(fleetHealth, (b) => b.ekmFleetDetails?.every((d) => d.healthStatus === 'ACTIVE') === true, FLEET_WAIT_MS);
  expect(h.ekmFleetDetails).toEqual([
    { id: 'a', model: expect.stringContaining('SoftHSM'), healthStatus: 'ACTIVE' },
    { id: 'b', model: expect.stringContaining('SoftHSM'), healthStatus: 'ACTIVE' },
  ]);
  expect((await get(app.opsPort as number, '/readyz')).status).toBe(200);
});

it('spreads requests over both HSMs, and what one HSM sealed the other opens', async () => {
  const before = await opsPerHsm();
  const running = load(8);
  await running.more(120);
  const { count, failures } = await running.stop();
  expect(failures).toEqual([]);
  expect(count).toBeGreaterThan(100);
  const after = await opsPerHsm();
  for (const id of ['a', 'b']) expect((after[id] ?? 0) - (before[id] ?? 0)).toBeGreaterThan(20);

  const fleet = app.engine;
  const aad = randomBytes(16);
  const plaintext = randomBytes(48);
  for (const [from, to] of [['a', 'b'], ['b', 'a']] as const) {
    const sealed = await fleet.member(from)!.encrypt('xks-k1-v1', plaintext, aad);
    expect(await fleet.member(to)!.decrypt('xks-k1-v1', sealed.iv, aad, sealed.ciphertext, sealed.tag)).toEqual(plaintext);
  }
});

it('keeps a version placed on one HSM there', async () => {
  const before = await opsPerHsm();
  for (let i = 0; i < 10; i++) expect(await roundTrip(app.port, P, 'k2', cred)).toBeUndefined();
  const after = await opsPerHsm();
  expect((after.a ?? 0) - (before.a ?? 0)).toBe(20);
  expect(after.b ?? 0).toBe(before.b ?? 0);
});

it('loses HSM b under load without failing a request: DEGRADED, then ACTIVE when it returns', async () => {
  const running = load(6);
  await running.more(30);
  const slot = findTokenSlot(faults.real!, (tokens[1] as Token).tokenLabel);
  expect(slot).toBeDefined();
  lose(slot);
  const degraded = await until(fleetHealth, (b) => b.ekmFleetDetails?.find((d) => d.id === 'b')?.healthStatus === 'UNAVAILABLE', FLEET_WAIT_MS);
  expect(degraded.ekmFleetDetails).toEqual([expect.objectContaining({ id: 'a', healthStatus: 'ACTIVE' }), expect.objectContaining({ id: 'b', healthStatus: 'UNAVAILABLE' })]);
  expect(app.health.current()?.status).toBe('DEGRADED');
  // k1 is still served by HSM a, k2 lives on a: ready.
  expect((await get(app.opsPort as number, '/readyz')).status).toBe(200);
  const metrics = (await get(app.opsPort as number, '/metrics')).text;
  expect(metrics).toMatch(/xks_ekm_health_status\{state="UNAVAILABLE",hsm_id="b"\} 1/);
  expect(metrics).toMatch(/xks_ekm_health_status\{state="DEGRADED"\} 1/);
  // Requests keep coming while b is gone: 30 more round trips, all served by a.
  await running.more(30);

  lose(undefined);
  const back = await until(fleetHealth, (b) => b.ekmFleetDetails?.every((d) => d.healthStatus === 'ACTIVE') === true, FLEET_WAIT_MS);
  expect(back.ekmFleetDetails?.map((d) => d.healthStatus)).toEqual(['ACTIVE', 'ACTIVE']);
  // Whether b was taken out by its breaker or only marked down by health checks depends on timing; either way it is not out now.
  expect((await get(app.opsPort as number, '/metrics')).text).not.toMatch(/xks_hsm_breaker_open\{hsm_id="b"\} 1/);
  const beforeReturn = (await opsPerHsm()).b ?? 0;
  // Back in the fleet: HSM b takes requests again.
  expect(await until(async () => (await opsPerHsm()).b ?? 0, (n) => n > beforeReturn, FLEET_WAIT_MS)).toBeGreaterThan(beforeReturn);
  const { count, failures } = await running.stop();
  expect(failures).toEqual([]);
  expect(count).toBeGreaterThan(50);
}, 45_000);

it('reports a key version missing from one HSM as soon as a reload adds it: that HSM DEGRADED, its requests served by the other', async () => {
  withFleet(ctx, ([ta]) => generateKek((ta as FleetToken).token, 'xks-k3-v1'));
  ctx.store.update((doc) => doc.addIn(['groups', 0, 'keys'], doc.createNode({ id: 'k3', label: 'xks-k3-v1' })));
  expect(reloader.reload('test')).toBe(true);
  // Before any request for it: the reload's event had the fleet look for the new version on every HSM.
  const h = await until(fleetHealth, (b) => b.ekmFleetDetails?.find((d) => d.id === 'b')?.healthStatus === 'DEGRADED', FLEET_WAIT_MS);
  expect(h.ekmFleetDetails?.map((d) => [d.id, d.healthStatus])).toEqual([
    ['a', 'ACTIVE'],
    ['b', 'DEGRADED'],
  ]);
  expect(app.engine.memberStats().find((m) => m.id === 'b')?.missing).toEqual(['xks-k3-v1']);
  expect((await get(app.opsPort as number, '/readyz')).status).toBe(200);
  // Served from the first request: b, known to lack it, is not asked.
  const before = await opsPerHsm();
  for (let i = 0; i < 10; i++) expect(await roundTrip(app.port, P, 'k3', cred)).toBeUndefined();
  expect((await opsPerHsm()).b ?? 0).toBe(before.b ?? 0);
  expect(describeKey(ctx, 'k3')).toMatchObject({ versions: [{ version: 1, presentOn: ['a'] }] });
});
