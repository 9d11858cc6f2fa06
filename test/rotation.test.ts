import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { ProxyApp } from '../src/app';
import { loadConfigFile } from '../src/config/load';
import { ConfigReloader } from '../src/config/reloader';
import { readUsage, UsageRecorder } from '../src/governance/usage';
import { silentLogger } from '../src/log';
import { ConfigStore, keyPath } from '../src/store/config-store';
import { decodeMetadata } from '../src/xks/ciphertext-format';
import { b64, Credential, keyMetadata, newCredential, send, testConfig } from './support/proxy';

const exec = promisify(execFile);
const ADMIN = join(__dirname, '..', 'dist', 'src', 'tools', 'admin.js');
const P = '/ks/kms/xks/v1';
const sfx = randomBytes(3).toString('hex');
const [timed, used, fresh] = [`t-${sfx}`, `u-${sfx}`, `n-${sfx}`];

let dir: string;
let usageDir: string;
let configFile: string;
let app: ProxyApp;
let reloader: ConfigReloader;
let cred: Credential;

async function ok(...args: string[]): Promise<Record<string, unknown>> {
  const { stdout, stderr } = await exec('node', [ADMIN, '--config', configFile, ...args]);
  expect(stderr).toBe('');
  return JSON.parse(stdout) as Record<string, unknown>;
}

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

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'xks-rot-'));
  usageDir = join(dir, 'usage');
  configFile = join(dir, 'config.yaml');
  cred = newCredential();
  const base = testConfig([]);
  base.keyStores = [{ name: 'ks', pathPrefix: '/ks', credentials: [{ accessKeyId: cred.accessKeyId, secretAccessKey: { value: cred.secretAccessKey } }], groups: [] }];
  base.groups = [];
  base.governance = { usageDir };
  writeFileSync(configFile, stringify(base));
  await ok('group', 'create', 'g', '--allow-all');
  await ok('group', 'assign', 'g', '--key-store', 'ks');
  for (const k of [timed, used, fresh]) await ok('key', 'create', k, '--group', 'g');
  await ok('key', 'set-rotation', timed, '--every-days', '30', '--start-at', days(-40));
  await ok('key', 'set-rotation', used, '--max-encryptions', '3');
  await ok('key', 'set-rotation', fresh, '--every-days', '30');
  // Time passes for the timed key: its version 1 was made 35 days ago, so the point at start+30d is behind us.
  new ConfigStore(configFile).update((doc, config) => {
    const p = keyPath(config, timed);
    doc.setIn(['groups', p.group, 'keys', p.key, 'versions', 0, 'createdAt'], days(-35));
  });
  const runtime = loadConfigFile(configFile);
  app = await ProxyApp.start({ runtime, logger: silentLogger });
  reloader = new ConfigReloader(configFile, runtime, (next) => app.setRuntime(next), silentLogger, app.events);
});

afterAll(async () => {
  reloader?.dispose();
  await app?.stop(1000);
  rmSync(dir, { recursive: true, force: true });
});

describe('rotation policies', () => {
  const sealed: Record<string, Sealed> = {};

  it('counts encryptions per key version durably across a restart, and exports the usage ratio', async () => {
    let recorder = new UsageRecorder(usageDir, app.events, () => app.runtime.config, { registry: app.metrics.registry, flushMs: 60_000, replica: 'pod-a' });
    sealed.used = await encrypt(used, 'counted');
    await encrypt(used, 'counted');
    sealed.timed = await encrypt(timed, 'timed');
    recorder.dispose(); // a restart: the next process writes a file of its own
    recorder = new UsageRecorder(usageDir, app.events, () => app.runtime.config, { registry: app.metrics.registry, flushMs: 60_000, replica: 'pod-a' });
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
