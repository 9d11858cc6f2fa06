import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RuntimeConfig } from '../src/config/load';
import { openFleetToken } from '../src/engine/replicate';
import { createDataObject, findDataObjects } from '../src/engine/token';
import { ProxyEvents } from '../src/events';
import { hsmUsage, readUsage, UsageRecorder } from '../src/governance/usage';
import { ConfigStore, keyPath } from '../src/store/config-store';
import { decodeMetadata } from '../src/xks/ciphertext-format';
import { b64, Credential, keyMetadata, send } from './support/proxy';
import { PREFIX as P, StoreHarness } from './admin-harness';
import { testHsm } from './support/hsm';

const h = new StoreHarness();
const ok = (...a: string[]) => h.ok(...a);
const sfx = randomBytes(3).toString('hex');
const [timed, used, fresh] = [`t-${sfx}`, `u-${sfx}`, `n-${sfx}`];

let dir: string;
let usageDir: string;
let configFile: string;
let app: StoreHarness['app'];
let reloader: StoreHarness['reloader'];
let cred: Credential;

type Sealed = Record<string, string>;
const encrypt = async (id: string, text: string) => {
  const r = await send(app.port, `${P}/keys/${id}/encrypt`, { requestMetadata: keyMetadata('Encrypt'), plaintext: b64(Buffer.from(text)), encryptionAlgorithm: 'AES_GCM' }, cred);
  expect(r.status).toBe(200);
  return r.body as Sealed;
};
const decrypt = async (id: string, s: Sealed) => {
  const r = await send(app.port, `${P}/keys/${id}/decrypt`, { requestMetadata: keyMetadata('Decrypt'), encryptionAlgorithm: 'AES_GCM', ciphertext: s.ciphertext, ciphertextMetadata: s.ciphertextMetadata, initializationVector: s.initializationVector, authenticationTag: s.authenticationTag }, cred);
  return Buffer.from(r.body.plaintext as string, 'base64').toString();
};
const version = (s: Sealed) => decodeMetadata(Buffer.from(s.ciphertextMetadata!, 'base64'));
const days = (n: number) => new Date(Date.now() + n * 86_400_000).toISOString();

/** A token of its own, so that no other suite's proxy has imported or folded anything there (made before this process loads the module). */
const t = testHsm();
const token = { id: 'u', modulePath: t.modulePath, environment: t.environment, tokenLabel: `usage-${sfx}`, pin: randomBytes(8).toString('hex') };

beforeAll(async () => {
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', token.tokenLabel, '--pin', token.pin, '--so-pin', randomBytes(8).toString('hex')], { env: { ...process.env, ...t.environment }, stdio: 'ignore' });
  usageDir = join(h.dir, 'usage');
  await h.init({ governance: { usageDir } });
  ({ dir, configFile, cred } = h);
  for (const k of [timed, used, fresh]) await ok('key', 'create', k, '--group', 'g');
  await ok('key', 'set-rotation', timed, '--every-days', '30', '--start-at', days(-40));
  await ok('key', 'set-rotation', used, '--max-encryptions', '3');
  await ok('key', 'set-rotation', fresh, '--every-days', '30');
  // Time passes for the timed key: its version 1 was made 35 days ago, so the point at start+30d is behind us.
  new ConfigStore(configFile).update((doc, config) => {
    const p = keyPath(config, timed);
    doc.setIn(['groups', p.group, 'keys', p.key, 'versions', 0, 'createdAt'], days(-35));
  });
  await h.start();
  ({ app, reloader } = h);
});

afterAll(() => h.stop());

describe('usage counts in the HSM', () => {
  const runtime = { config: { hsms: [token], groups: [] }, hsmPins: new Map([['u', token.pin]]) } as unknown as RuntimeConfig;
  const onToken = <T>(fn: (s: ReturnType<typeof openFleetToken>) => T): T => {
    const s = openFleetToken(token, token.pin);
    try {
      return fn(s);
    } finally {
      s.close();
    }
  };
  const label = `l-${sfx}`;

  it('imports the files of processes before the upgrade once, folds writers gone for an hour, never counts twice', () => {
    const legacy = join(h.dir, 'legacy-usage');
    mkdirSync(legacy);
    writeFileSync(join(legacy, 'old-pod-1-abc.usage.json'), JSON.stringify({ encryptions: { [label]: 7 } }));
    const events = new ProxyEvents();
    const count = (n: number) => {
      for (let i = 0; i < n; i++) events.publish('key.encrypted', { label });
    };
    const first = new UsageRecorder(events, () => runtime, { dir: legacy, flushMs: 600_000, replica: 'pod-a' });
    count(3);
    first.flush();
    expect(onToken(hsmUsage).get(label)).toBe(10);
    first.dispose();
    // A writer whose last snapshot is two hours old: its process is gone.
    onToken((s) => createDataObject(s, 'xks-proxy usage', 'xks-usage gone-1', Buffer.from(JSON.stringify({ v: 1, writer: 'gone-1', seq: 4, at: Date.now() - 7_200_000, counts: { [label]: 5 } }))));
    expect(onToken(hsmUsage).get(label)).toBe(15);
    const second = new UsageRecorder(events, () => runtime, { dir: legacy, flushMs: 600_000, replica: 'pod-b' });
    count(2);
    second.flush();
    expect(onToken(hsmUsage).get(label)).toBe(17); // the files are not imported again; gone-1 folded into pod-b's snapshot
    expect(onToken((s) => findDataObjects(s, 'xks-proxy usage', 'xks-usage gone-1'))).toHaveLength(0);
    count(1);
    second.flush();
    second.dispose();
    // One snapshot per writer is left: the import, pod-a's, pod-b's.
    expect(onToken((s) => findDataObjects(s, 'xks-proxy usage'))).toHaveLength(3);
    expect(onToken(hsmUsage).get(label)).toBe(18);
    // The files alone say less: deleting them changes nothing in the HSM.
    expect(readUsage(legacy).get(label)).toBe(7 + 3 + 3);
  });
});

describe('rotation policies', () => {
  const sealed: Record<string, Sealed> = {};

  it('counts encryptions per key version durably across a restart, and exports the usage ratio', async () => {
    let recorder = new UsageRecorder(app.events, () => app.runtime, { dir: usageDir, registry: app.metrics.registry, flushMs: 60_000, replica: 'pod-a' });
    sealed.used = await encrypt(used, 'counted');
    await encrypt(used, 'counted');
    sealed.timed = await encrypt(timed, 'timed');
    recorder.dispose(); // a restart: the next process writes a file of its own
    recorder = new UsageRecorder(app.events, () => app.runtime, { dir: usageDir, registry: app.metrics.registry, flushMs: 60_000, replica: 'pod-a' });
    await encrypt(used, 'counted');
    await send(app.port, `${P}/keys/${used}/decrypt`, {}, cred); // not an encryption
    recorder.flush();
    const totals = readUsage(usageDir);
    expect(totals.get(`xks-${used}-v1`)).toBe(3);
    expect(totals.get(`xks-${timed}-v1`)).toBe(1);
    const metrics = await (await fetch(`http://127.0.0.1:${app.opsPort}/metrics`)).text();
    expect(metrics).toMatch(/^xks_key_version_usage_ratio_max 1$/m);
    expect(metrics).not.toContain(used); // key ids are never metric labels
    recorder.dispose();
  });

  it('lists what is due: the scheduled and the used-up key, not the fresh one', async () => {
    const out = await ok('key', 'rotate-due', '--dry-run');
    expect((out.due as { keyId: string }[]).map((d) => d.keyId).sort()).toEqual([timed, used].sort());
  });

  it('deleting the usage files, or repointing usageDir, does not make a key look less used', async () => {
    const due = async (...more: string[]) => ((await ok('key', 'rotate-due', '--dry-run', ...more)).due as { keyId: string }[]).map((d) => d.keyId);
    expect(await due()).toContain(used);
    for (const f of readdirSync(usageDir)) rmSync(join(usageDir, f));
    expect(await due()).toContain(used);
    const empty = join(dir, 'empty-usage');
    mkdirSync(empty);
    new ConfigStore(configFile).update((doc) => doc.setIn(['governance', 'usageDir'], empty));
    expect(await due()).toContain(used);
    expect(await due('--usage-dir', empty)).toContain(used);
    new ConfigStore(configFile).update((doc) => doc.deleteIn(['governance', 'usageDir']));
    expect(await due()).toContain(used);
    new ConfigStore(configFile).update((doc) => doc.setIn(['governance', 'usageDir'], usageDir));
  });

  it('rotates what is due; new encrypts use the new version, old ciphertexts still decrypt', async () => {
    const out = await ok('key', 'rotate-due');
    expect((out.rotated as { keyId: string; currentVersion: number }[]).map((r) => [r.keyId, r.currentVersion]).sort()).toEqual([[timed, 2], [used, 2]].sort());
    expect(reloader.reload('test')).toBe(true);
    for (const [k, name] of [[used, 'used'], [timed, 'timed']] as const) {
      expect(version(sealed[name]!)).toBe(1);
      expect(version(await encrypt(k, 'after'))).toBe(2);
      expect(await decrypt(k, sealed[name]!)).toBe(name === 'used' ? 'counted' : 'timed');
    }
    expect(version(await encrypt(fresh, 'x'))).toBe(1);
    // Nothing is due any more: the new versions start from zero and from now.
    expect((await ok('key', 'rotate-due', '--dry-run')).due).toEqual([]);
  });
});
