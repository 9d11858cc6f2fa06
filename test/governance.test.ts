import { expect } from '@jest/globals';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
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
import { b64, Credential, keyMetadata, newCredential, send } from './support/proxy';
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

interface Restart {
  /** The refused config's own audit destination (the restart otherwise writes no audit). */
  auditFile?: string;
  /** Changes the copy before the restart (e.g. points `hsm` at another token). */
  edit?: (doc: Document) => void;
  /** Runs against the listening proxy (its XKS and ops ports) before it is stopped. */
  during?: (port: number, opsPort: number) => Promise<void>;
}

/**
 * Starts the built proxy (a real restart: nothing remembered in memory) on a copy of `text` without the
 * audit file the in-process proxy writes; resolves when it exits or once it listens (then stops it).
 */
async function startMain(text: string, env: NodeJS.ProcessEnv = {}, more: Restart = {}): Promise<{ code: number | null; output: string; opsPort?: number; metrics?: string }> {
  const doc = parseDocument(text);
  doc.deleteIn(['audit']);
  if (more.auditFile) doc.setIn(['audit'], doc.createNode({ file: more.auditFile }));
  more.edit?.(doc);
  const file = join(dir, `restart-${randomBytes(3).toString('hex')}.yaml`);
  writeFileSync(file, doc.toString());
  const child = spawn('node', [join(__dirname, '..', 'dist', 'src', 'main.js'), '--config', file], { env: { ...process.env, XKS_GOVERNANCE_TRUST: pin, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const stop = (): Promise<number | null> => (child.kill('SIGTERM'), exited);
  await until(() => child.exitCode !== null || output.includes('xks-proxy listening'), Boolean, 15_000);
  if (child.exitCode !== null || !output.includes('xks-proxy listening')) return { code: await exited, output };
  const { port, opsPort } = JSON.parse(output.split('\n').find((l) => l.includes('xks-proxy listening'))!) as { port: number; opsPort: number };
  try {
    await more.during?.(port, opsPort);
    const metrics = await (await fetch(`http://127.0.0.1:${opsPort}/metrics`)).text();
    return { code: await stop(), output, opsPort, metrics };
  } finally {
    child.kill('SIGTERM');
  }
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
/** A token of the config writer's own (they hold its PIN), made before this process loads the module. */
let evil: HsmMember;
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
  evil = { id: 'evil', target: { ...hsmB.target, tokenLabel: `gov-evil-${suffix}` }, pin: randomBytes(8).toString('hex') };
  for (const m of [hsmB, evil]) {
    execFileSync('softhsm2-util', ['--init-token', '--free', '--label', m.target.tokenLabel, '--pin', m.pin, '--so-pin', randomBytes(8).toString('hex')], { env: { ...process.env, ...t.environment }, stdio: 'ignore' });
  }
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

  it('a governed rotation makes its HSM key at propose (the approvers sign its check value), uses it from apply on; withdraw takes back what a proposal made', async () => {
    const labels = async () => JSON.stringify((await admin('hsm', 'list-keys')).out);
    const v2 = `xks-${keyId}-v2`;
    const p = await ok('change', 'propose', '--as', 'alice', 'key', 'rotate', keyId);
    expect(await labels()).toContain(v2);
    expect(readFileSync(configFile, 'utf8')).not.toContain(v2);
    const made = (p.made as { keys: Record<string, { checkValue: string; made: boolean }> }).keys[v2]!;
    expect(made).toMatchObject({ made: true, checkValue: expect.stringMatching(/^[A-Za-z0-9+/]{80}$/) });
    await ok('change', 'approve', p.id as string, '--as', 'bob', '--key', keys.bob!);
    await ok('change', 'approve', p.id as string, '--as', 'carol', '--key', keys.carol!);
    expect(await ok('change', 'apply', p.id as string, '--as', 'alice')).toMatchObject({ result: { currentVersion: 2 } });
    expect(reloader.reload('test')).toBe(true);
    expect(decodeMetadata(Buffer.from((await encrypt()).body.ciphertextMetadata as string, 'base64'))).toBe(2);
    const v = loadConfigFile(configFile).config.groups[0]!.keys.find((k) => k.id === keyId)!.versions!.find((x) => x.label === v2)!;
    expect(v).toMatchObject({ createdAt: p.proposedAt, checkValue: made.checkValue });
    // A proposal never applied: the same version proposed again says which change holds its label; withdraw destroys it.
    const v3 = `xks-${keyId}-v3`;
    const q = await ok('change', 'propose', '--as', 'alice', 'key', 'rotate', keyId);
    expect((await admin('change', 'propose', '--as', 'alice', 'key', 'rotate', keyId)).err).toMatch(new RegExp(`a key labelled "${v3}" already exists: made by pending change ${q.id as string} \\(xks-admin change withdraw`));
    expect(await ok('change', 'withdraw', q.id as string, '--as', 'alice')).toMatchObject({ destroyed: [v3] });
    expect(await labels()).not.toContain(v3);
    expect(adminAudit().at(-1)).toMatchObject({ action: 'change-withdraw', change: q.id, keysDestroyed: v3 });
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

describe('key substitution through the hsm sections, refused by the check values', () => {
  /** The writer's keys: made on their token under the recorded label and CKA_ID of each version of the protected key. */
  const forgeKeys = (): void => {
    const k = loadConfigFile(configFile).config.groups[0]!.keys.find((x) => x.id === keyId)!;
    const t = openFleetToken(evil.target, evil.pin);
    try {
      for (const v of k.versions!) if (findSecretKeys(t, v.label).length === 0) generateKek(t, v.label, Buffer.from(v.objectId!, 'hex'));
    } finally {
      t.close();
    }
  };
  const onEvil = (doc: Document): void => {
    doc.setIn(['hsm', 'tokenLabel'], evil.target.tokenLabel);
    doc.setIn(['hsm', 'pin'], doc.createNode({ value: evil.pin }));
  };
  const failures = (metrics: string | undefined, hsm: string): number => Number(new RegExp(`^xks_key_check_failures_total\\{hsm_id="${hsm}"\\} (\\d+)$`, 'm').exec(metrics ?? '')?.[1] ?? NaN);
  const encryptOn = (port: number) => send(port, `${P}/keys/${keyId}/encrypt`, { requestMetadata: keyMetadata('Encrypt'), plaintext: b64(Buffer.from('x')), encryptionAlgorithm: 'AES_GCM' }, cred);

  it('hsm pointed at a token holding keys under the recorded labels and CKA_IDs, restarted on the rolled-back state: the key is refused, logged and counted', async () => {
    forgeKeys();
    const before = readFileSync(configFile, 'utf8');
    const off = await governed(['bob', 'carol'], 'key', 'disable', keyId);
    expect(off.apply.code).toBe(0);
    expect(reloader.reload('test')).toBe(true);
    // The writer's token has no marks, so the old (enabled) state is accepted there; its keys are not the recorded ones.
    let answer: Awaited<ReturnType<typeof encryptOn>> | undefined;
    const r = await startMain(before, {}, { edit: onEvil, during: async (port) => void (answer = await encryptOn(port)) });
    expect(answer?.status).toBe(500);
    expect(answer?.body).toMatchObject({ errorName: 'InternalException' });
    expect(failures(r.metrics, evil.target.tokenLabel)).toBe(1);
    expect(r.output).toMatch(new RegExp(`"hsm":"${evil.target.tokenLabel}","label":"xks-${keyId}-v\\d".*key refused: the HSM object under this key version's label and CKA_ID does not open the check value`));
  });

  it('a fleet member holding other key material is refused there, at start, while the real HSM serves', async () => {
    // The disabled state of the test above is in force: the start's check of every version on every member finds it.
    const asFleet = (doc: Document): void => {
      const real = (doc.getIn(['hsm']) as { toJSON(): Record<string, unknown> }).toJSON();
      doc.deleteIn(['hsm']);
      doc.setIn(['hsms'], doc.createNode([{ ...real, id: 'real' }, { ...real, id: 'evil', tokenLabel: evil.target.tokenLabel, pin: { value: evil.pin } }]));
    };
    let seen = NaN;
    const r = await startMain(readFileSync(configFile, 'utf8'), {}, {
      edit: asFleet,
      during: async (_port, opsPort) => {
        for (let i = 0; i < 100 && !(seen >= 1); i++) {
          seen = failures(await (await fetch(`http://127.0.0.1:${opsPort}/metrics`)).text(), 'evil');
          if (!(seen >= 1)) await new Promise((res) => setTimeout(res, 50));
        }
      },
    });
    expect(failures(r.metrics, 'evil')).toBeGreaterThanOrEqual(1);
    expect(failures(r.metrics, 'real')).toBe(0);
    expect((await governed(['bob', 'carol'], 'key', 'enable', keyId)).apply.code).toBe(0);
    expect(reloader.reload('test')).toBe(true);
    expect((await encrypt()).status).toBe(200);
  });
});

describe('the identity of a key store reaching a protected group is under the quorum', () => {
  const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');
  const refusals = async (reason: string): Promise<number> => Number(new RegExp(`reason="${reason}"} (\\d+)`).exec(await metric('xks_governance_refusals_total'))?.[1] ?? 0);
  const encryptAs = (c: Credential) => send(app.port, `${P}/keys/${keyId}/encrypt`, { requestMetadata: keyMetadata('Encrypt'), plaintext: b64(Buffer.from('x')), encryptionAlgorithm: 'AES_GCM' }, c);

  it('set-quorum recorded it: the SHA-256 of each secret is in the config, never the secret', () => {
    const ks = loadConfigFile(configFile).config.keyStores[0]!;
    expect(ks.credentials.map((c) => c.secretSha256)).toEqual([sha256(cred.secretAccessKey)]);
  });

  it('a credential added by hand (with or without its SHA-256), or a secret changed, is refused on reload and at restart', async () => {
    const good = readFileSync(configFile, 'utf8');
    const extra = newCredential();
    const tried = async (edit: (doc: Document) => void, reason: string, says: RegExp, as: Credential): Promise<void> => {
      const doc = parseDocument(good);
      edit(doc);
      writeFileSync(configFile, doc.toString());
      const before = await refusals(reason);
      expect(reloader.reload('test')).toBe(false);
      expect(await refusals(reason)).toBe(before + 1);
      expect((await encryptAs(as)).body).toMatchObject({ errorName: 'AuthenticationFailedException' });
      expect((await encryptAs(cred)).status).toBe(200);
      const restart = await startMain(doc.toString());
      expect(restart.code).toBe(78);
      expect(restart.output).toMatch(says);
    };
    const added = (digest: boolean) => (doc: Document) =>
      doc.addIn(['keyStores', 0, 'credentials'], doc.createNode({ accessKeyId: extra.accessKeyId, secretAccessKey: { value: extra.secretAccessKey }, ...(digest ? { secretSha256: sha256(extra.secretAccessKey) } : {}) }));
    await tried(added(false), 'quorum', /group \\"g\\" is quorum-protected/, extra);
    await tried(added(true), 'quorum', /group \\"g\\" is quorum-protected/, extra);
    // The writer's own secret under the key store's access key id: the recorded digest refuses it.
    const theirs = { ...cred, secretAccessKey: extra.secretAccessKey };
    await tried((doc) => doc.setIn(['keyStores', 0, 'credentials', 0, 'secretAccessKey'], doc.createNode({ value: extra.secretAccessKey })), 'secret', /the secret does not match the credential's recorded secretSha256/, theirs);
    writeFileSync(configFile, good);
    expect(reloader.reload('test')).toBe(true);
  });

  it('rotation is a governed change: the proposal writes the secret, approvers sign its SHA-256, apply prints it; a secret file changed by hand is refused', async () => {
    const p = await ok('change', 'propose', '--as', 'alice', 'credential', 'add', '--key-store', 'ks');
    const proposal = readFileSync(join(`${configFile}.changes`, `${p.id as string}.json`), 'utf8');
    for (const a of ['bob', 'carol']) await ok('change', 'approve', p.id as string, '--as', a, '--key', keys[a]!);
    const applied = await ok('change', 'apply', p.id as string, '--as', 'alice');
    const kms = (applied.result as { XksProxyAuthenticationCredential: { AccessKeyId: string; RawSecretAccessKey: string } }).XksProxyAuthenticationCredential;
    expect(proposal).not.toContain(kms.RawSecretAccessKey);
    expect(proposal).toContain(sha256(kms.RawSecretAccessKey));
    expect(reloader.reload('test')).toBe(true);
    const fresh: Credential = { accessKeyId: kms.AccessKeyId, secretAccessKey: kms.RawSecretAccessKey };
    expect((await encryptAs(fresh)).status).toBe(200);
    // The writer swaps the new secret's file for a secret of theirs.
    const file = (loadConfigFile(configFile).config.keyStores[0]!.credentials.find((c) => c.accessKeyId === fresh.accessKeyId)!.secretAccessKey as { file: string }).file;
    const theirs = newCredential().secretAccessKey;
    writeFileSync(file, theirs);
    const before = await refusals('secret');
    expect(reloader.reload('test')).toBe(false);
    expect(await refusals('secret')).toBe(before + 1);
    expect(adminAudit().at(-1)).toMatchObject({ action: 'governance-refusal', reason: 'secret', group: 'g' });
    expect((await encryptAs({ ...fresh, secretAccessKey: theirs })).body).toMatchObject({ errorName: 'AuthenticationFailedException' });
    expect((await encryptAs(fresh)).status).toBe(200);
    const restart = await startMain(readFileSync(configFile, 'utf8'));
    expect(restart.code).toBe(78);
    expect(restart.output).toMatch(/the secret does not match the credential's recorded secretSha256/);
    writeFileSync(file, fresh.secretAccessKey);
    expect(reloader.reload('test')).toBe(true);
    // Step 3 of the rotation, governed too (here the new credential goes, so the suite keeps its own).
    expect((await governed(['bob', 'carol'], 'credential', 'retire', '--key-store', 'ks', '--access-key-id', fresh.accessKeyId)).apply.code).toBe(0);
    expect(reloader.reload('test')).toBe(true);
    expect((await encryptAs(fresh)).body).toMatchObject({ errorName: 'AuthenticationFailedException' });
    expect((await encryptAs(cred)).status).toBe(200);
  });

  it('a disabled key store re-enabled by hand is refused on reload and at restart', async () => {
    expect((await governed(['bob', 'carol'], 'key-store', 'disable', 'ks')).apply.code).toBe(0);
    expect(reloader.reload('test')).toBe(true);
    expect((await encrypt()).body).toMatchObject({ errorName: 'InvalidStateException' });
    const disabled = readFileSync(configFile, 'utf8');
    const doc = parseDocument(disabled);
    doc.setIn(['keyStores', 0, 'status'], 'ENABLED');
    writeFileSync(configFile, doc.toString());
    expect(reloader.reload('test')).toBe(false);
    expect((await encrypt()).body).toMatchObject({ errorName: 'InvalidStateException' });
    expect((await startMain(doc.toString())).code).toBe(78);
    writeFileSync(configFile, disabled);
    expect(reloader.reload('test')).toBe(true);
    expect((await governed(['bob', 'carol'], 'key-store', 'enable', 'ks')).apply.code).toBe(0);
    expect(reloader.reload('test')).toBe(true);
    expect((await encrypt()).status).toBe(200);
  });
});

describe('upgrade, and refusals at start', () => {
  it('a protected state from before check values and key store identities keeps working, is warned about and exported; one governed change records both', async () => {
    const good = readFileSync(configFile, 'utf8');
    const config = loadConfigFile(configFile).config;
    // The state an older release approved: no check values, no secret digests (signed by the quorum, as then).
    const doc = parseDocument(good);
    config.groups[0]!.keys.forEach((k, ki) => k.versions?.forEach((_v, vi) => doc.deleteIn(['groups', 0, 'keys', ki, 'versions', vi, 'checkValue'])));
    config.keyStores[0]!.credentials.forEach((_c, ci) => doc.deleteIn(['keyStores', 0, 'credentials', ci, 'secretSha256']));
    // Stripped by the writer, with the approvals of the state that had them: refused.
    writeFileSync(configFile, doc.toString());
    expect(reloader.reload('test')).toBe(false);
    doc.setIn(['groups', 0, 'revision'], doc.createNode({ epoch: config.groups[0]!.revision!.epoch + 1, previous: groupStateHash(config, config.groups[0]!), expiresAt: new Date(Date.now() + 3_600_000).toISOString() }));
    signAsQuorum(doc);
    writeFileSync(configFile, doc.toString());
    expect(reloader.reload('test')).toBe(true);
    const versions = config.groups[0]!.keys.reduce((n, k) => n + (k.versions?.length ?? 1), 0);
    expect(await metric('xks_governance_unprotected')).toMatch(new RegExp(`kind="key_version"} ${versions}\\n.*kind="key_store"} 1`, 's'));
    const start = await startMain(doc.toString());
    expect(start.output).toMatch(/"level":40,.*key version\(s\) of quorum-protected groups have no check value.*key store\(s\) \\"ks\\" reach quorum-protected groups without their identity recorded/);
    expect((await encrypt()).status).toBe(200);
    const record = await governed(['bob', 'carol'], 'group', 'record', 'g');
    expect(record.apply).toMatchObject({ code: 0, out: { result: { checkValues: versions, keyStores: ['ks'] } } });
    expect(reloader.reload('test')).toBe(true);
    expect(await metric('xks_governance_unprotected')).toMatch(/kind="key_version"} 0\n.*kind="key_store"} 0/s);
    expect((await encrypt()).status).toBe(200);
  });

  it('a config refused at start writes a governance-refusal line to its admin audit chain', async () => {
    const doc = parseDocument(readFileSync(configFile, 'utf8'));
    doc.addIn(['groups', 0, 'policy', 'rules'], doc.createNode({ id: 'by-hand', effect: 'allow', principals: ['*'] }));
    const auditFile = join(dir, 'start-audit.log');
    const r = await startMain(doc.toString(), {}, { auditFile });
    expect(r.code).toBe(78);
    const lines = readFileSync(`${auditFile}.admin`, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.at(-1)).toMatchObject({ action: 'governance-refusal', at: 'start', reason: 'quorum', group: 'g', message: expect.stringMatching(/group "g" is quorum-protected/) });
    expect(await admin('audit', 'verify', `${auditFile}.admin`)).toMatchObject({ code: 0, out: { ok: true } });
  });
});
