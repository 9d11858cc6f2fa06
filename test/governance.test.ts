import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseDocument } from 'yaml';
import { generateApproverKey, signApproval } from '../src/governance/signatures';
import { decodeMetadata } from '../src/xks/ciphertext-format';
import { b64, Credential, keyMetadata, send } from './support/proxy';
import { PREFIX as P, StoreHarness } from './admin-harness';

const h = new StoreHarness();
const admin = (...a: string[]) => h.admin(...a);
const ok = (...a: string[]) => h.ok(...a);
const suffix = randomBytes(3).toString('hex');
const keyId = `gov-${suffix}`;

let dir: string;
let configFile: string;
let app: StoreHarness['app'];
let reloader: StoreHarness['reloader'];
let cred: Credential;
const keys: Record<string, string> = {};
let pin = '';
const setPin = (value: string) => {
  pin = value;
  h.env = { XKS_GOVERNANCE_TRUST: value };
};

/** propose, approve by each of `approvers`, apply; returns the apply result (or the failure). */
async function governed(approvers: string[], ...command: string[]) {
  const p = await ok('change', 'propose', '--as', 'alice', ...command);
  for (const a of approvers) await ok('change', 'approve', p.id as string, '--as', a, '--key', keys[a]!);
  return { id: p.id as string, proposal: p, apply: await admin('change', 'apply', p.id as string, '--as', 'alice') };
}

const encrypt = () => send(app.port, `${P}/keys/${keyId}/encrypt`, { requestMetadata: keyMetadata('Encrypt'), plaintext: b64(Buffer.from('x')), encryptionAlgorithm: 'AES_GCM' }, cred);
const adminAudit = () => readFileSync(join(dir, 'audit.log.admin'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
async function metric(name: string): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${app.opsPort}/metrics`);
  return (await r.text()).split('\n').filter((l) => l.startsWith(name)).join('\n');
}

beforeAll(async () => {
  await h.init();
  ({ dir, configFile, cred } = h);
  await ok('key', 'create', keyId, '--group', 'g');
  for (const [name, role] of [['alice', 'administrator'], ['bob', 'approver'], ['carol', 'approver'], ['dave', 'auditor']] as const) {
    keys[name] = join(dir, `${name}.pem`);
    const k = await ok('admin', 'keygen', '--out', keys[name]!);
    await ok('admin', 'add', name, '--role', role, '--public-key', k.publicKey as string);
  }
  // Protecting the group is itself a governed change; it alters the root, so the pin lists both roots meanwhile.
  const old = (await ok('governance', 'pin')).governanceRoot as string;
  const p = await ok('change', 'propose', '--as', 'alice', 'group', 'set-quorum', 'g', '--approvals', '2', '--approvers', 'alice,bob,carol');
  expect(p.note).toMatch(/XKS_GOVERNANCE_TRUST must list/);
  setPin(`${old},${p.governanceRoot as string}`);
  await ok('change', 'approve', p.id as string, '--as', 'bob', '--key', keys.bob!);
  await ok('change', 'approve', p.id as string, '--as', 'carol', '--key', keys.carol!);
  await ok('change', 'apply', p.id as string, '--as', 'alice');
  setPin(p.governanceRoot as string);
  process.env.XKS_GOVERNANCE_TRUST = pin; // the proxy in this process reads the pin from its environment
  expect((await ok('governance', 'pin')).governanceRoot).toBe(pin);
  await h.start();
  ({ app, reloader } = h);
});

afterAll(async () => {
  delete process.env.XKS_GOVERNANCE_TRUST;
  await h.stop();
});

describe('quorum approvals verified by the proxy', () => {
  it('refuses a hand edit of a protected group: old state keeps serving, metric and admin audit show it', async () => {
    expect((await encrypt()).status).toBe(200);
    const good = readFileSync(configFile, 'utf8');
    const doc = parseDocument(good);
    doc.setIn(['groups', 0, 'keys', 0, 'status'], 'DISABLED');
    writeFileSync(configFile, doc.toString());
    expect(reloader.reload('test')).toBe(false);
    expect((await encrypt()).status).toBe(200);
    expect(await metric('xks_governance_refusals_total')).toMatch(/reason="quorum"} 1/);
    expect(await metric('xks_config_reloads_total')).toMatch(/result="failure"} 1/);
    expect(adminAudit().at(-1)).toMatchObject({ action: 'governance-refusal', reason: 'quorum', group: 'g' });
    // The CLI refuses to work on it either, and refuses a direct change of a protected group.
    expect((await admin('key', 'enable', keyId)).err).toMatch(/refused by governance: group "g" is quorum-protected/);
    writeFileSync(configFile, good);
    expect(reloader.reload('test')).toBe(true);
    expect((await admin('key', 'disable', keyId)).err).toMatch(/has 0 valid approval\(s\), needs 2/);
  });

  it('applies a change with M approvals, not with fewer or with an auditor', async () => {
    const one = await governed(['bob'], 'key', 'disable', keyId);
    expect(one.apply.code).toBe(1);
    expect(one.apply.err).toMatch(/has 1 valid approval\(s\), needs 2/);
    expect((await admin('change', 'approve', one.id, '--as', 'dave', '--key', keys.dave!)).code).toBe(0);
    expect((await admin('change', 'apply', one.id, '--as', 'alice')).err).toMatch(/needs 2/);
    expect((await admin('change', 'approve', one.id, '--as', 'carol', '--key', keys.bob!)).err).toMatch(/is not the key of "carol"/);
    await ok('change', 'approve', one.id, '--as', 'carol', '--key', keys.carol!);
    expect(await ok('change', 'apply', one.id, '--as', 'alice')).toMatchObject({ approvers: expect.arrayContaining(['bob', 'carol']) });
    expect(reloader.reload('test')).toBe(true);
    expect((await encrypt()).body).toMatchObject({ errorName: 'InvalidStateException' });
    const trail = adminAudit().filter((l) => l.change === one.id).map((l) => [l.action, l.by]);
    expect(trail).toEqual([
      ['change-propose', 'alice'],
      ['change-approve', 'bob'],
      ['change-refused', 'alice'],
      ['change-approve', 'dave'],
      ['change-refused', 'alice'],
      ['change-approve', 'carol'],
      ['change-apply', 'alice'],
    ]);
    const back = await governed(['alice', 'carol'], 'key', 'enable', keyId);
    expect(back.apply.code).toBe(0);
    expect(reloader.reload('test')).toBe(true);
    expect((await encrypt()).status).toBe(200);
  });

  it('an approval signs the exact state: a signature replayed onto another change does not count', async () => {
    const good = readFileSync(configFile, 'utf8');
    const doc = parseDocument(good);
    doc.setIn(['groups', 0, 'policy', 'rules'], doc.createNode([]));
    writeFileSync(configFile, doc.toString()); // old approvals kept, state changed
    expect(reloader.reload('test')).toBe(false);
    writeFileSync(configFile, good);
    expect(reloader.reload('test')).toBe(true);
  });

  it('refuses a swapped approver list even when the new approvers signed the change', async () => {
    const good = readFileSync(configFile, 'utf8');
    const doc = parseDocument(good);
    const m1 = generateApproverKey();
    const m2 = generateApproverKey();
    doc.setIn(['governance', 'administrators'], doc.createNode([
      { name: 'mallory', role: 'approver', publicKey: m1.publicKey },
      { name: 'trent', role: 'approver', publicKey: m2.publicKey },
    ]));
    doc.setIn(['groups', 0, 'quorum'], doc.createNode({ approvals: 2, approvers: ['mallory', 'trent'] }));
    doc.setIn(['groups', 0, 'keys', 0, 'status'], 'DISABLED');
    // Sign exactly what the proxy would hash: compute it through the same code path.
    const { buildRuntimeConfig } = await import('../src/config/load');
    const { groupStateHash } = await import('../src/governance/state');
    const staged = buildRuntimeConfig(doc.toJS(), process.env, { quorum: false }).config;
    const h = groupStateHash(staged, staged.groups[0]!);
    doc.setIn(['groups', 0, 'approvals'], doc.createNode([
      { approver: 'mallory', signature: signApproval(m1.privateKeyPem, 'g', h) },
      { approver: 'trent', signature: signApproval(m2.privateKeyPem, 'g', h) },
    ]));
    writeFileSync(configFile, doc.toString());
    // Without the pin this config would be self-consistent: the pin is what refuses it.
    expect(() => buildRuntimeConfig(doc.toJS(), { ...process.env, XKS_GOVERNANCE_TRUST: undefined })).toThrow(/need a pinned governance root/);
    const selfPinned = buildRuntimeConfig(doc.toJS(), { ...process.env, XKS_GOVERNANCE_TRUST: (await import('../src/governance/state')).governanceRootHash(staged) });
    expect(selfPinned.config.groups[0]!.keys[0]!.status).toBe('DISABLED');
    expect(reloader.reload('test')).toBe(false);
    expect(await metric('xks_governance_refusals_total')).toMatch(/reason="trust-root"} 1/);
    expect(adminAudit().at(-1)).toMatchObject({ action: 'governance-refusal', reason: 'trust-root' });
    expect((await encrypt()).status).toBe(200);
    // Dropping the quorum altogether changes the root too.
    const unprotected = parseDocument(good);
    unprotected.deleteIn(['groups', 0, 'quorum']);
    unprotected.deleteIn(['groups', 0, 'approvals']);
    unprotected.setIn(['groups', 0, 'keys', 0, 'status'], 'DISABLED');
    writeFileSync(configFile, unprotected.toString());
    expect(reloader.reload('test')).toBe(false);
    writeFileSync(configFile, good);
    expect(reloader.reload('test')).toBe(true);
    expect((await encrypt()).status).toBe(200);
  });

  it('a governed rotation makes its HSM key only at apply, with the time of the proposal', async () => {
    const p = await ok('change', 'propose', '--as', 'alice', 'key', 'rotate', keyId);
    const labels = async () => JSON.stringify((await admin('hsm', 'list-keys')).out);
    expect(await labels()).not.toContain(`xks-${keyId}-v2`);
    await new Promise((res) => setTimeout(res, 1100)); // approvers re-run it later: the hash must not depend on when
    await ok('change', 'approve', p.id as string, '--as', 'bob', '--key', keys.bob!);
    await ok('change', 'approve', p.id as string, '--as', 'carol', '--key', keys.carol!);
    expect(await labels()).not.toContain(`xks-${keyId}-v2`);
    expect(await ok('change', 'apply', p.id as string, '--as', 'alice')).toMatchObject({ result: { currentVersion: 2 } });
    expect(await labels()).toContain(`xks-${keyId}-v2`);
    expect(reloader.reload('test')).toBe(true);
    expect(decodeMetadata(Buffer.from((await encrypt()).body.ciphertextMetadata as string, 'base64'))).toBe(2);
    expect(readFileSync(configFile, 'utf8')).toContain(`createdAt: ${p.proposedAt as string}`);
  });

  it('the admin audit chain verifies', async () => {
    expect(await admin('audit', 'verify', join(dir, 'audit.log.admin'))).toMatchObject({ code: 0, out: { ok: true } });
  });
});
