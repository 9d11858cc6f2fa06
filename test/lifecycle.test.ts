import { expect } from '@jest/globals';
import { execFile } from 'node:child_process';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { ProxyApp } from '../src/app';
import { loadConfigFile } from '../src/config/load';
import { ConfigReloader } from '../src/config/reloader';
import { silentLogger } from '../src/log';
import { ConfigStore, keyPath } from '../src/store/config-store';
import { decodeMetadata, hsmAad } from '../src/xks/ciphertext-format';
import { testHsm } from './support/hsm';
import { until } from './support/promises';
import { b64, Credential, keyMetadata, newCredential, send, testConfig } from './support/proxy';

const exec = promisify(execFile);
const ADMIN = join(__dirname, '..', 'dist', 'src', 'tools', 'admin.js');
const P = '/ks/kms/xks/v1';

let dir: string;
let configFile: string;
let app: ProxyApp;
let reloader: ConfigReloader;
let cred: Credential;
const suffix = randomBytes(3).toString('hex'); // HSM labels are global to the shared token

async function admin(...args: string[]): Promise<{ code: number; out: Record<string, unknown>; err: string }> {
  try {
    const { stdout, stderr } = await exec('node', [ADMIN, '--config', configFile, ...args]);
    return { code: 0, out: stdout.trim() ? (JSON.parse(stdout) as Record<string, unknown>) : {}, err: stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, out: {}, err: x.stderr };
  }
}

/** An admin change, then the reload a running proxy would do on its next file poll. */
async function change(...args: string[]): Promise<Record<string, unknown>> {
  const r = await admin(...args);
  expect({ code: r.code, err: r.err }).toEqual({ code: 0, err: '' });
  expect(reloader.reload('test')).toBe(true);
  return r.out;
}

const enc = (pt: Buffer, aad?: Buffer) => ({ requestMetadata: keyMetadata('Encrypt'), plaintext: b64(pt), encryptionAlgorithm: 'AES_GCM', ...(aad ? { additionalAuthenticatedData: b64(aad) } : {}) });
type Sealed = Record<string, string>;
const dec = (s: Sealed, aad?: Buffer) => ({
  requestMetadata: keyMetadata('Decrypt'),
  encryptionAlgorithm: 'AES_GCM',
  ciphertext: s.ciphertext,
  ciphertextMetadata: s.ciphertextMetadata,
  initializationVector: s.initializationVector,
  authenticationTag: s.authenticationTag,
  ...(aad ? { additionalAuthenticatedData: b64(aad) } : {}),
});
const keyId = `k-${suffix}`;
const version = (s: Sealed) => decodeMetadata(Buffer.from(s.ciphertextMetadata as string, 'base64'));

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'xks-life-'));
  configFile = join(dir, 'config.yaml');
  cred = newCredential();
  const base = testConfig([]);
  base.keyStores = [{ name: 'ks', pathPrefix: '/ks', credentials: [{ accessKeyId: cred.accessKeyId, secretAccessKey: { value: cred.secretAccessKey } }], groups: [] }];
  base.groups = [];
  base.audit = { file: join(dir, 'audit.log') };
  writeFileSync(configFile, `# written by lifecycle.test.ts\n${stringify(base)}`);
  expect((await admin('group', 'create', 'g', '--allow-all')).code).toBe(0);
  expect((await admin('group', 'assign', 'g', '--key-store', 'ks')).code).toBe(0);
  expect((await admin('key', 'create', keyId, '--group', 'g')).code).toBe(0);
  const runtime = loadConfigFile(configFile);
  app = await ProxyApp.start({ runtime, logger: silentLogger });
  reloader = new ConfigReloader(configFile, runtime, (next) => app.setRuntime(next), silentLogger, app.events);
});

afterAll(async () => {
  reloader?.dispose();
  await app?.stop(1000);
  rmSync(dir, { recursive: true, force: true });
});

async function encrypt(pt: Buffer, c: Credential = cred, aad?: Buffer) {
  return send(app.port, `${P}/keys/${keyId}/encrypt`, enc(pt, aad), c);
}

describe('key lifecycle through xks-admin on a running proxy', () => {
  it('serves a key the CLI generated in the HSM, and keeps comments in the store', async () => {
    const r = await encrypt(Buffer.from('hello'));
    expect(r.status).toBe(200);
    expect(version(r.body as Sealed)).toBe(1);
    expect(readFileSync(configFile, 'utf8')).toContain('# written by lifecycle.test.ts');
    const d = await admin('key', 'describe', keyId);
    expect(d.out).toMatchObject({ id: keyId, group: 'g', currentVersion: 1, keyStores: ['ks'] });
  });

  it('disables and re-enables a key without restart', async () => {
    await change('key', 'disable', keyId);
    expect((await encrypt(Buffer.from('x'))).body).toMatchObject({ errorName: 'InvalidStateException' });
    const md = await send(app.port, `${P}/keys/${keyId}/metadata`, { requestMetadata: keyMetadata('DescribeKey') }, cred);
    expect(md.body.keyStatus).toBe('DISABLED');
    await change('key', 'enable', keyId);
    expect((await encrypt(Buffer.from('x'))).status).toBe(200);
  });

  it('disables and re-enables a whole group', async () => {
    await change('group', 'disable', 'g');
    expect((await encrypt(Buffer.from('x'))).body).toMatchObject({ errorName: 'InvalidStateException' });
    await change('group', 'enable', 'g');
    expect((await encrypt(Buffer.from('x'))).status).toBe(200);
  });

  it('rotates: version-1 ciphertexts still decrypt, new encrypts use version 2', async () => {
    const aad = Buffer.from('ctx');
    const old = (await encrypt(Buffer.from('before rotation'), cred, aad)).body as Sealed;
    expect(version(old)).toBe(1);
    expect(await change('key', 'rotate', keyId)).toMatchObject({ currentVersion: 2 });
    const fresh = (await encrypt(Buffer.from('after rotation'), cred, aad)).body as Sealed;
    expect(version(fresh)).toBe(2);
    for (const [s, text] of [[old, 'before rotation'], [fresh, 'after rotation']] as const) {
      const r = await send(app.port, `${P}/keys/${keyId}/decrypt`, dec(s, aad), cred);
      expect(Buffer.from(r.body.plaintext as string, 'base64').toString()).toBe(text);
    }
  });

  it('schedules deletion with a waiting period, can cancel it, and destroys only after it', async () => {
    await change('key', 'schedule-deletion', keyId, '--days', '7');
    expect((await encrypt(Buffer.from('x'))).body).toMatchObject({ errorName: 'InvalidStateException', errorMessage: expect.stringMatching(/pending deletion/) });
    const early = await admin('key', 'purge', keyId);
    expect(early.code).toBe(1);
    expect(early.err).toMatch(/cannot be destroyed before/);
    expect((await admin('key', 'schedule-deletion', keyId, '--days', '3')).err).toMatch(/7 to 30 days/);
    await change('key', 'cancel-deletion', keyId);
    expect((await encrypt(Buffer.from('x'))).status).toBe(200);

    await change('key', 'schedule-deletion', keyId, '--days', '7');
    // Time passes: move the waiting period into the past.
    new ConfigStore(configFile).update((doc, config) => {
      const p = keyPath(config, keyId);
      doc.setIn(['groups', p.group, 'keys', p.key, 'deletion', 'notBefore'], new Date(Date.now() - 1000).toISOString());
    });
    const purged = await change('key', 'purge', keyId);
    expect(purged.destroyed).toEqual([`xks-${keyId}-v1`, `xks-${keyId}-v2`]);
    expect((await encrypt(Buffer.from('x'))).body).toMatchObject({ errorName: 'KeyNotFoundException' });
    const labels = await admin('hsm', 'list-keys');
    expect(JSON.stringify(labels.out)).not.toContain(keyId);
  });

  it('imports a key wrapped under an HSM transport key (BYOK), non-extractable', async () => {
    const material = randomBytes(32);
    const wrap = createCipheriv('id-aes256-wrap-pad', Buffer.from(testHsm().transportKeyHex, 'hex'), Buffer.from('A65959A6', 'hex'));
    const wrapped = Buffer.concat([wrap.update(material), wrap.final()]);
    writeFileSync(join(dir, 'wrapped.bin'), wrapped);
    await change('key', 'import', `byok-${suffix}`, '--group', 'g', '--wrapped', join(dir, 'wrapped.bin'), '--wrapping-key', 'transport-key');
    const aad = Buffer.from('byok');
    const r = await send(app.port, `${P}/keys/byok-${suffix}/encrypt`, enc(Buffer.from('imported!'), aad), cred);
    expect(r.status).toBe(200);
    const s = r.body as Sealed;
    const d = createDecipheriv('aes-256-gcm', material, Buffer.from(s.initializationVector!, 'base64'));
    d.setAAD(hsmAad(aad, Buffer.from(s.ciphertextMetadata!, 'base64')));
    d.setAuthTag(Buffer.from(s.authenticationTag!, 'base64'));
    expect(Buffer.concat([d.update(Buffer.from(s.ciphertext!, 'base64')), d.final()]).toString()).toBe('imported!');
  });

  it('rotates SigV4 credentials: both live, then only the new one', async () => {
    const health = { requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' } };
    const out = await change('credential', 'add', '--key-store', 'ks');
    expect(out.XksProxyUriPath).toBe('/ks/kms/xks/v1');
    const c = out.XksProxyAuthenticationCredential as { AccessKeyId: string; RawSecretAccessKey: string };
    const fresh = { accessKeyId: c.AccessKeyId, secretAccessKey: c.RawSecretAccessKey };
    expect((await send(app.port, `${P}/health`, health, cred)).status).toBe(200);
    expect((await send(app.port, `${P}/health`, health, fresh)).status).toBe(200);
    expect(readFileSync(configFile, 'utf8')).not.toContain(c.RawSecretAccessKey);
    // Its age is tracked from now (xks_sigv4_credential_age_days).
    const added = app.runtime.config.keyStores[0]!.credentials.find((k) => k.accessKeyId === c.AccessKeyId);
    expect(Date.now() - Date.parse(added!.createdAt!)).toBeLessThan(60_000);
    await change('credential', 'retire', '--key-store', 'ks', '--access-key-id', cred.accessKeyId);
    expect((await send(app.port, `${P}/health`, health, cred)).status).toBe(401);
    expect((await send(app.port, `${P}/health`, health, fresh)).status).toBe(200);
    expect((await admin('credential', 'retire', '--key-store', 'ks', '--access-key-id', fresh.accessKeyId)).err).toMatch(/last credential/);
    cred = fresh;
  });

  it('refuses a malformed change whole and keeps serving the previous state', async () => {
    const before = readFileSync(configFile, 'utf8');
    writeFileSync(join(dir, 'bad-rules.yaml'), 'rules:\n  - id: broken\n    effect: maybe\n');
    const r = await admin('group', 'set-policy', 'g', '--file', join(dir, 'bad-rules.yaml'));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/change refused, nothing written: .*groups\[0\]\.policy\.rules\[0\]\.effect/);
    expect(readFileSync(configFile, 'utf8')).toBe(before);

    // A broken file written by hand: the running proxy keeps its last good state.
    writeFileSync(configFile, before.replace('keyStores:', 'keyStores: [oops'));
    expect(reloader.reload('test')).toBe(false);
    expect((await send(app.port, `${P}/keys/byok-${suffix}/metadata`, { requestMetadata: keyMetadata('DescribeKey') }, cred)).status).toBe(200);
    writeFileSync(configFile, before);
  });

  it('picks a change up by itself (directory watch), without a reload call', async () => {
    reloader.watch(60_000); // polling too slow to matter: only the watch can pass this
    const r = await admin('key', 'disable', `byok-${suffix}`);
    expect(r.code).toBe(0);
    // The watch's reload within a second (the poll is a minute away).
    const encrypt = async (): Promise<number> => (await send(app.port, `${P}/keys/byok-${suffix}/encrypt`, enc(Buffer.from('x')), cred)).status;
    expect(await until(encrypt, (status) => status !== 200, 1000)).toBe(400);
  });
});

describe('audit trail', () => {
  it('has a line per request with the decision and no plaintext; the chain verifies', async () => {
    const log = readFileSync(join(dir, 'audit.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(log.length).toBeGreaterThan(10);
    const line = log.find((l) => l.operation === 'Encrypt' && l.outcome === 'success')!;
    expect(line).toMatchObject({ event: 'key-operation', keyStore: 'ks', decision: 'allow', policyRule: 'allow-all', kmsRequestId: expect.any(String), awsPrincipalArn: expect.any(String) });
    expect(readFileSync(join(dir, 'audit.log'), 'utf8')).not.toContain(b64(Buffer.from('hello')));
    expect(await admin('audit', 'verify', join(dir, 'audit.log'))).toMatchObject({ code: 0, out: { ok: true } });
    expect(await admin('audit', 'verify', join(dir, 'audit.log.admin'))).toMatchObject({ code: 0, out: { ok: true } });
  });

  it('detects an edited, a removed and an inserted line', async () => {
    const file = join(dir, 'audit.log');
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    const copy = join(dir, 'tampered.log');
    const check = async (content: string[]) => {
      writeFileSync(copy, content.join('\n') + '\n');
      return admin('audit', 'verify', copy);
    };
    expect(await check(lines.map((l, i) => (i === 3 ? l.replace('"outcome":"success"', '"outcome":"AccessDeniedException"') : l)))).toMatchObject({ code: 1 });
    expect(await check(lines.filter((_l, i) => i !== 2))).toMatchObject({ code: 1 });
    expect(await check([...lines.slice(0, 2), lines[1]!, ...lines.slice(2)])).toMatchObject({ code: 1 });
  });
});
