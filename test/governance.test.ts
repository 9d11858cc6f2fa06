import { expect } from '@jest/globals';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as pkcs11js from 'pkcs11js';
import { Document, parseDocument } from 'yaml';
import { buildRuntimeConfig, loadConfigFile } from '../src/config/load';
import { openFleetToken } from '../src/engine/replicate';
import { findSecretKeys, generateKek } from '../src/engine/token';
import { Claim } from '../src/governance/epochs';
import { checkAndRecord, HsmMember, readMarks } from '../src/governance/high-water';
import { generateApproverKey, signApproval } from '../src/governance/signatures';
import { watchGovernedStates } from '../src/governance/watch';
import { silentLogger } from '../src/log';
import { groupStateHash } from '../src/governance/state';
import { testHsm } from './support/hsm';
import { until } from './support/promises';
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

/**
 * Starts the built proxy (a real restart: nothing remembered in memory) on a copy of `text` without the
 * audit file the in-process proxy writes; resolves when it exits or once it listens (then stops it).
 */
async function startMain(text: string, env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; output: string; opsPort?: number; metrics?: string }> {
  const doc = parseDocument(text);
  doc.deleteIn(['audit']);
  const file = join(dir, `restart-${randomBytes(3).toString('hex')}.yaml`);
  writeFileSync(file, doc.toString());
  const child = spawn('node', [join(__dirname, '..', 'dist', 'src', 'main.js'), '--config', file], { env: { ...process.env, XKS_GOVERNANCE_TRUST: pin, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  await until(() => child.exitCode !== null || output.includes('xks-proxy listening'), Boolean, 15_000);
  if (child.exitCode !== null || !output.includes('xks-proxy listening')) return { code: await exited, output };
  const opsPort = (JSON.parse(output.split('\n').find((l) => l.includes('xks-proxy listening'))!) as { opsPort: number }).opsPort;
  const metrics = await (await fetch(`http://127.0.0.1:${opsPort}/metrics`)).text();
  child.kill('SIGTERM');
  return { code: await exited, output, opsPort, metrics };
}

/** The HSM label of the key's current version, as the store says. */
const currentLabel = (): string => {
  const k = loadConfigFile(configFile).config.groups.find((g) => g.name === 'g')!.keys.find((x) => x.id === keyId)!;
  return (k.versions ?? [{ version: 1, label: k.label! }]).reduce((a, b) => (b.version > a.version ? b : a)).label;
};

/** Signs group g of `doc` as approvers bob and carol would (the test holds their private keys). */
function signAsQuorum(doc: Document): void {
  const staged = buildRuntimeConfig(doc.toJS(), process.env, { quorum: false }).config;
  const hash = groupStateHash(staged, staged.groups[0]!);
  doc.setIn(['groups', 0, 'approvals'], doc.createNode(['bob', 'carol'].map((a) => ({ approver: a, signature: signApproval(readFileSync(keys[a]!, 'utf8'), 'g', hash) }))));
}

/** The test token, and a second token of its own made before this process loads the module, as a fleet's HSMs. */
const hsmA = (): HsmMember => {
  const t = testHsm();
  return { id: 'a', target: { modulePath: t.modulePath, tokenLabel: t.tokenLabel, environment: t.environment }, pin: t.pin };
};
let hsmB: HsmMember;
const readMarksOf = (m: HsmMember, group: string): number[] => {
  const t = openFleetToken(m.target, m.pin);
  try {
    return readMarks(t).filter((x) => x.group === group).map((x) => x.epoch).sort((a, b) => a - b);
  } finally {
    t.close();
  }
};

beforeAll(async () => {
  const t = testHsm();
  hsmB = { id: 'b', target: { modulePath: t.modulePath, tokenLabel: `gov-b-${suffix}`, environment: t.environment }, pin: randomBytes(8).toString('hex') };
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', hsmB.target.tokenLabel, '--pin', hsmB.pin, '--so-pin', randomBytes(8).toString('hex')], { env: { ...process.env, ...t.environment }, stdio: 'ignore' });
  await h.init();
  ({ dir, configFile, cred } = h);
  await ok('key', 'create', keyId, '--group', 'g');
  for (const [name, role] of [['alice', 'administrator'], ['bob', 'approver'], ['carol', 'approver'], ['dave', 'auditor']] as const) {
    keys[name] = join(dir, `${name}.pem`);
    const k = await ok('admin', 'keygen', '--out', keys[name]);
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

  it('applies a change with M approvals, not with fewer; an auditor cannot approve', async () => {
    const one = await governed(['bob'], 'key', 'disable', keyId);
    expect(one.apply.code).toBe(1);
    expect(one.apply.err).toMatch(/has 1 valid approval\(s\), needs 2/);
    // Refused at approve, with nothing signed: the proxy would not count an auditor's signature anyway.
    expect(await admin('change', 'approve', one.id, '--as', 'dave', '--key', keys.dave!)).toMatchObject({ code: 1, err: expect.stringMatching(/"dave" is an auditor, who cannot approve/) });
    expect((await ok('change', 'show', one.id)).approvals).toEqual({ g: [expect.objectContaining({ approver: 'bob' })] });
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
      ['change-approve-refused', 'dave'],
      ['change-refused', 'alice'],
      ['change-approve-refused', 'carol'], // with bob's key
      ['change-approve', 'carol'],
      ['change-apply', 'alice'],
    ]);
    const back = await governed(['alice', 'carol'], 'key', 'enable', keyId);
    expect(back.apply.code).toBe(0);
    expect(reloader.reload('test')).toBe(true);
    expect((await encrypt()).status).toBe(200);
  });

  it('approve refuses at once a signer whose signature the quorum of the resulting state would not count', async () => {
    // Carol is an approver today, but not in the quorum this change produces, which is the one the proxy checks.
    const p = await ok('change', 'propose', '--as', 'alice', 'group', 'set-quorum', 'g', '--approvals', '2', '--approvers', 'alice,bob');
    const carol = await admin('change', 'approve', p.id as string, '--as', 'carol', '--key', keys.carol!);
    expect(carol).toMatchObject({ code: 1, err: expect.stringMatching(/change [0-9a-f]{12}: "carol" is not an approver in the quorum of group "g"/) });
    expect((await admin('change', 'approve', p.id as string, '--as', 'erin', '--key', keys.carol!)).err).toMatch(/no administrator named "erin"/);
    expect(await ok('change', 'approve', p.id as string, '--as', 'bob', '--key', keys.bob!)).toMatchObject({ approvals: { g: ['bob'] } });
    expect(adminAudit().filter((l) => l.change === p.id).map((l) => [l.action, l.by, l.reason])).toEqual([
      ['change-propose', 'alice', undefined],
      ['change-approve-refused', 'carol', '"carol" is not an approver in the quorum of group "g"'],
      ['change-approve-refused', 'erin', 'no administrator named "erin"'],
      ['change-approve', 'bob', undefined],
    ]);
    rmSync(join(`${configFile}.changes`, `${p.id as string}.json`)); // withdrawn: it would need a new pin
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

describe('what a config writer without a quorum tried, refused', () => {
  it('rollback: the config saved before a governed change, copied back, is refused on reload and at restart', async () => {
    const before = readFileSync(configFile, 'utf8');
    const disable = await governed(['bob', 'carol'], 'key', 'disable', keyId);
    expect(disable.apply.code).toBe(0);
    expect(reloader.reload('test')).toBe(true);
    expect((await encrypt()).body).toMatchObject({ errorName: 'InvalidStateException' });
    const after = readFileSync(configFile, 'utf8');
    writeFileSync(configFile, before); // every approval in it is valid: it was the approved state
    expect(reloader.reload('test')).toBe(false);
    expect((await encrypt()).body).toMatchObject({ errorName: 'InvalidStateException' });
    expect(await metric('xks_governance_refusals_total')).toMatch(/reason="rollback"} 1/);
    expect(adminAudit().at(-1)).toMatchObject({ action: 'governance-refusal', reason: 'rollback', group: 'g' });
    // A restart remembers nothing in memory: the newest accepted state is in the HSM.
    const restart = await startMain(before);
    expect(restart.code).toBe(78);
    expect(restart.output).toMatch(/group \\"g\\": state epoch \d+ is older than the newest accepted \(epoch \d+\)/);
    writeFileSync(configFile, after);
    expect(reloader.reload('test')).toBe(true);
    expect((await governed(['bob', 'carol'], 'key', 'enable', keyId)).apply.code).toBe(0);
    expect(reloader.reload('test')).toBe(true);
    expect((await encrypt()).status).toBe(200);
  });

  it('shadow: a second entry naming a protected key\'s HSM key is refused at load and reload, naming both', async () => {
    const good = readFileSync(configFile, 'utf8');
    const label = currentLabel();
    const doc = parseDocument(good);
    doc.addIn(['groups'], doc.createNode({ name: 'shadow', policy: { rules: [{ id: 'all', effect: 'allow' }] }, keys: [{ id: 'shadow-kek', label }] }));
    doc.addIn(['keyStores', 0, 'groups'], 'shadow');
    writeFileSync(configFile, doc.toString());
    expect(reloader.reload('test')).toBe(false);
    expect(() => loadConfigFile(configFile)).toThrow(new RegExp(`HSM key "${label}" .*key "shadow-kek" \\(group "shadow"\\).*key "${keyId}" \\(group "g"\\)`));
    const shadow = await send(app.port, `${P}/keys/shadow-kek/encrypt`, { requestMetadata: keyMetadata('Encrypt'), plaintext: b64(Buffer.from('x')), encryptionAlgorithm: 'AES_GCM' }, cred);
    expect(shadow.body).toMatchObject({ errorName: 'KeyNotFoundException' });
    writeFileSync(configFile, good);
    expect(reloader.reload('test')).toBe(true);
  });

  it('audit: one anchors file serves the request chain and the admin chain; a cut tail is caught', async () => {
    const anchors = join(dir, 'anchors.jsonl');
    for (const f of ['audit.log', 'audit.log.admin']) {
      const head = await ok('audit', 'head', join(dir, f));
      expect(head.chain).toBe(f);
      appendFileSync(anchors, `${JSON.stringify(head)}\n`);
    }
    for (const f of ['audit.log', 'audit.log.admin']) expect(await admin('audit', 'verify', join(dir, f), '--anchors', anchors)).toMatchObject({ code: 0, out: { ok: true } });
    const file = join(dir, 'audit.log.admin');
    const text = readFileSync(file, 'utf8');
    // The harness drops the output of a failing command; verify prints its verdict there with exit 1.
    const verify = (...a: string[]) => {
      const r = spawnSync('node', [join(__dirname, '..', 'dist', 'src', 'tools', 'admin.js'), 'audit', 'verify', ...a], { encoding: 'utf8' });
      return { code: r.status, out: JSON.parse(r.stdout) as Record<string, unknown> };
    };
    writeFileSync(file, text.trimEnd().split('\n').slice(0, -1).join('\n') + '\n');
    try {
      expect(verify(file)).toMatchObject({ code: 0 }); // a cut tail leaves a valid chain
      expect(verify(file, '--anchors', anchors)).toMatchObject({ code: 1, out: { ok: false, reason: expect.stringMatching(/chain audit.log.admin ends at seq \d+ but was anchored at seq \d+/) } });
    } finally {
      writeFileSync(file, text);
    }
  });

  it('approvals expire: a fully approved state first seen after its expiry is refused, as is one that does not follow the accepted state', async () => {
    const good = readFileSync(configFile, 'utf8');
    const current = loadConfigFile(configFile).config.groups[0]!;
    const stateNow = groupStateHash(loadConfigFile(configFile).config, current);
    const forged = (revision: object) => {
      const doc = parseDocument(good);
      doc.setIn(['groups', 0, 'policy', 'rules'], doc.createNode([{ id: 'all', effect: 'allow' }, { id: 'no-r', effect: 'deny', principals: ['arn:aws:iam::111122223333:role/r'] }]));
      doc.setIn(['groups', 0, 'revision'], doc.createNode(revision));
      signAsQuorum(doc);
      writeFileSync(configFile, doc.toString());
    };
    // A proposal approved in full and never applied, applied by hand after its approvals' life.
    forged({ epoch: current.revision!.epoch + 1, previous: stateNow, expiresAt: new Date(Date.now() - 60_000).toISOString() });
    expect(reloader.reload('test')).toBe(false);
    expect(() => loadConfigFile(configFile)).toThrow(/refused by governance: group "g": the approvals of state epoch \d+ expired at .* before the proxy first accepted it/);
    expect(await metric('xks_governance_refusals_total')).toMatch(/reason="expired"} 1/);
    forged({ epoch: current.revision!.epoch + 1, previous: 'ab'.repeat(32), expiresAt: new Date(Date.now() + 3_600_000).toISOString() });
    expect(() => loadConfigFile(configFile)).toThrow(/state epoch \d+ follows abababababababab\.\.\., not the state accepted at epoch \d+/);
    writeFileSync(configFile, good);
    expect(reloader.reload('test')).toBe(true);
  });

  it('approve and apply refuse a proposal past its life, and one dated in the future', async () => {
    const p = await ok('change', 'propose', '--as', 'alice', 'key', 'disable', keyId);
    expect(Date.parse(p.expiresAt as string) - Date.parse(p.proposedAt as string)).toBe(72 * 3_600_000);
    const file = join(`${configFile}.changes`, `${p.id as string}.json`);
    const proposal = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    writeFileSync(file, JSON.stringify({ ...proposal, proposedAt: new Date(Date.now() - 73 * 3_600_000).toISOString() }));
    expect((await admin('change', 'approve', p.id as string, '--as', 'bob', '--key', keys.bob!)).err).toMatch(/change [0-9a-f]{12}: it expired at .*; propose it again/);
    expect((await admin('change', 'apply', p.id as string, '--as', 'alice')).err).toMatch(/it expired at/);
    writeFileSync(file, JSON.stringify({ ...proposal, proposedAt: new Date(Date.now() + 86_400_000).toISOString() }));
    expect((await admin('change', 'approve', p.id as string, '--as', 'bob', '--key', keys.bob!)).err).toMatch(/in the future/);
    rmSync(file);
  });

  it('an HSM key is the object recorded for it: another key given its label later is not used', async () => {
    await ok('group', 'create', 'plain', '--allow-all');
    await ok('group', 'assign', 'plain', '--key-store', 'ks');
    await ok('key', 'create', `plain-${suffix}`, '--group', 'plain');
    expect(reloader.reload('test')).toBe(true);
    const label = `xks-plain-${suffix}-v1`;
    const plain = () => send(app.port, `${P}/keys/plain-${suffix}/encrypt`, { requestMetadata: keyMetadata('Encrypt'), plaintext: b64(Buffer.from('x')), encryptionAlgorithm: 'AES_GCM' }, cred);
    expect((await plain()).status).toBe(200);
    const recorded = loadConfigFile(configFile).config.groups.find((g) => g.name === 'plain')!.keys[0]!.versions![0]!.objectId;
    expect(recorded).toMatch(/^[0-9a-f]{32}$/);
    const t = openFleetToken(hsmA().target, hsmA().pin);
    try {
      const [key] = findSecretKeys(t, label);
      expect(t.mod.C_GetAttributeValue(t.session, key!, [{ type: pkcs11js.CKA_ID }])[0]!.value.toString('hex')).toBe(recorded);
      t.mod.C_DestroyObject(t.session, key!);
      generateKek(t, label); // same label, another object (no CKA_ID, or another one)
    } finally {
      t.close();
    }
    // The proxy's cached handle is stale now: it looks the label up again and refuses what it finds.
    expect((await plain()).body).toMatchObject({ errorName: 'InternalException' });
  });

  it('the newest accepted state is recorded on every HSM of a fleet, and a change waits for all of them', () => {
    const group = `fleet-${suffix}`;
    const claim = (epoch: number, state: string, previous?: string): Claim => ({ group, epoch, state, previous, expiresAt: new Date(Date.now() + 3_600_000).toISOString() });
    const [s0, s1, s2] = ['0', '1', '2'].map((c) => c.repeat(64)) as [string, string, string];
    const marksOn = (m: HsmMember) => {
      const t = openFleetToken(m.target, m.pin);
      try {
        return readMarks(t).filter((x) => x.group === group).map((x) => x.epoch).sort();
      } finally {
        t.close();
      }
    };
    // An upgrade: a state without a revision (epoch 0) is recorded as it is, on both HSMs.
    checkAndRecord([hsmA(), hsmB], [{ group, epoch: 0, state: s0 }], new Date());
    expect([marksOn(hsmA()), marksOn(hsmB)]).toEqual([[0], [0]]);
    expect(() => checkAndRecord([hsmA(), hsmB], [{ group, epoch: 0, state: s1 }], new Date())).toThrow(/state 1111111111111111\.\.\. is not the one accepted at epoch 0/);
    // An HSM that cannot be reached: its token is not there (a wrong PIN would not do: the login is per
    // application and token, and this process may already hold one).
    const down: HsmMember = { ...hsmB, target: { ...hsmB.target, tokenLabel: `gone-${suffix}` } };
    expect(() => checkAndRecord([hsmA(), down], [claim(1, s1, s0)], new Date())).toThrow(/the new state of group "fleet-[0-9a-f]+" could not be recorded on every HSM \(b: .*no token labelled.*\); it is accepted once all hold it/);
    checkAndRecord([hsmA(), hsmB], [claim(1, s1, s0)], new Date());
    expect([marksOn(hsmA()), marksOn(hsmB)]).toEqual([[0, 1], [0, 1]]);
    // Either HSM alone now refuses the older state; one that answers is enough to keep the current one.
    expect(() => checkAndRecord([hsmB], [{ group, epoch: 0, state: s0 }], new Date())).toThrow(/state epoch 0 is older than the newest accepted \(epoch 1\)/);
    expect(() => checkAndRecord([down, hsmA()], [claim(1, s1, s0)], new Date())).not.toThrow();
    expect(() => checkAndRecord([down], [claim(1, s1, s0)], new Date())).toThrow(/cannot read the newest accepted governance states from any HSM/);
    checkAndRecord([hsmA(), hsmB], [claim(2, s2, s1)], new Date());
    expect(marksOn(hsmB)).toEqual([1, 2]); // older epochs pruned
  });

  /** The store with group g changed by `edit` at `revision`, signed by the quorum: approvals the writer obtained or planted. */
  const signedState = (good: string, revision: object, edit: (doc: Document) => void = () => undefined): string => {
    const doc = parseDocument(good);
    edit(doc);
    doc.setIn(['groups', 0, 'revision'], doc.createNode(revision));
    signAsQuorum(doc);
    return doc.toString();
  };
  const accepted = () => {
    const config = loadConfigFile(configFile).config;
    return { epoch: config.groups[0]!.revision!.epoch, state: groupStateHash(config, config.groups[0]!) };
  };
  const soon = () => new Date(Date.now() + 3_600_000).toISOString();
  const addRule = (id: string) => (doc: Document) => doc.addIn(['groups', 0, 'policy', 'rules'], doc.createNode({ id, effect: 'deny', principals: [`arn:aws:iam::111122223333:role/${id}`] }));

  it('fork: a branch that left the accepted history, signed two epochs ahead, is refused by the proxy and by apply', async () => {
    const good = readFileSync(configFile, 'utf8');
    const now = accepted();
    // Approvers who signed, on a store the writer planted, a branch from a sibling of the accepted state: its chain
    // back to the accepted state cannot be checked, so only the next epoch, naming the accepted state, is taken.
    writeFileSync(configFile, signedState(good, { epoch: now.epoch + 2, previous: 'cd'.repeat(32), expiresAt: soon() }, addRule('fork')));
    expect(reloader.reload('test')).toBe(false);
    expect(() => loadConfigFile(configFile)).toThrow(new RegExp(`group "g": state epoch ${now.epoch + 2} is not the next after the newest accepted \\(epoch ${now.epoch}\\)`));
    // The branch one epoch ahead in the store: a change built on it is refused at apply (it would be two ahead).
    writeFileSync(configFile, signedState(good, { epoch: now.epoch + 1, previous: 'cd'.repeat(32), expiresAt: soon() }, addRule('fork')));
    const built = await governed(['bob', 'carol'], 'key', 'set-rotation', keyId, '--every-days', '90');
    expect(built.apply).toMatchObject({ code: 1, err: expect.stringMatching(new RegExp(`state epoch ${now.epoch + 1} follows cdcdcdcdcdcdcdcd\\.\\.\\., not the state accepted at epoch ${now.epoch}`)) });
    rmSync(join(`${configFile}.changes`, `${built.id}.json`));
    writeFileSync(configFile, good);
    expect(reloader.reload('test')).toBe(true);
    expect(accepted()).toEqual(now);
  });

  it('apply first records a store state that no HSM holds yet but follows the accepted one (an apply whose record failed)', async () => {
    const good = readFileSync(configFile, 'utf8');
    const now = accepted();
    writeFileSync(configFile, signedState(good, { epoch: now.epoch + 1, previous: now.state, expiresAt: soon() }, addRule('missed')));
    const next = await governed(['bob', 'carol'], 'key', 'set-rotation', keyId, '--every-days', '90');
    expect(next.apply).toMatchObject({ code: 0, out: { epochs: `g:${now.epoch + 2}` } });
    expect(reloader.reload('test')).toBe(true);
    expect(accepted().epoch).toBe(now.epoch + 2);
    expect(readMarksOf(hsmA(), 'g')).toEqual([now.epoch + 1, now.epoch + 2]);
  });

  it('an approved change whose file the writer swaps back before the proxy read it: the old file is refused, the running state shows behind', async () => {
    const good = readFileSync(configFile, 'utf8');
    const rollbacks = async () => Number((await metric('xks_governance_refusals_total')).match(/reason="rollback"} (\d+)/)![1]);
    const before = await rollbacks();
    const watch = watchGovernedStates(app.events, () => app.runtime, silentLogger);
    try {
      watch.check();
      expect(await metric('xks_governance_states_behind')).toBe('xks_governance_states_behind 0');
      const off = await governed(['bob', 'carol'], 'key', 'disable', keyId);
      expect(off.apply.code).toBe(0);
      const applied = readFileSync(configFile, 'utf8');
      writeFileSync(configFile, good); // the state this proxy runs: a reload used to take it without asking the HSM
      expect(reloader.reload('test')).toBe(false);
      expect(await rollbacks()).toBe(before + 1);
      expect(adminAudit().at(-1)).toMatchObject({ action: 'governance-refusal', reason: 'rollback', group: 'g' });
      // A process that never even sees a change (a ConfigMap put back before the kubelet synced it) says so too.
      watch.check();
      expect(await metric('xks_governance_states_behind')).toBe('xks_governance_states_behind 1');
      writeFileSync(configFile, applied);
      expect(reloader.reload('test')).toBe(true);
      watch.check();
      expect(await metric('xks_governance_states_behind')).toBe('xks_governance_states_behind 0');
      expect((await encrypt()).body).toMatchObject({ errorName: 'InvalidStateException' });
      expect((await governed(['bob', 'carol'], 'key', 'enable', keyId)).apply.code).toBe(0);
      expect(reloader.reload('test')).toBe(true);
    } finally {
      watch.stop();
    }
  });

  it('a pin that still holds the old governance root is warned about at start and exported', async () => {
    const other = 'ab'.repeat(32);
    const r = await startMain(readFileSync(configFile, 'utf8'), { XKS_GOVERNANCE_TRUST: `${pin},${other}` });
    expect(r.opsPort).toBeDefined();
    expect(r.output).toMatch(/"level":40,.*XKS_GOVERNANCE_TRUST pins 2 governance roots/);
    expect(r.metrics).toMatch(/^xks_governance_pinned_roots 2$/m);
    const one = await startMain(readFileSync(configFile, 'utf8'));
    expect(one.output).not.toMatch(/pins \d+ governance roots/);
    expect(one.metrics).toMatch(/^xks_governance_pinned_roots 1$/m);
  });
});
