/**
 * Audit on stdout (audit.stdout: true), as a Kubernetes log pipeline collects it: a real proxy process
 * with two cluster workers writes its hash-chained lines to stdout between its request-log lines;
 * `xks-admin audit verify -` picks them out of the mixed output, verifies each worker's chain on its
 * own, and names the line of a tampered entry.
 */
import { expect } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configSchema } from '../src/config/schema';
import { keyMetadata, keyStoreWithKeys, newCredential, send, testConfig, b64 } from './support/proxy';
import { startProxyProcess } from './support/proxy-process';

const DIST = join(__dirname, '..', 'dist', 'src');
const cred = newCredential();

function admin(args: string[], input?: string): { code: number | null; out: string; err: string } {
  const r = spawnSync('node', [join(DIST, 'tools', 'admin.js'), ...args], { input, encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

let dir: string;
let output = '';
const requestIds: string[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'xks-audit-stdout-'));
  const config = testConfig([keyStoreWithKeys('t', '/t', [cred], [{ id: 'k', label: 'test-key-1' }])], {
    server: { workers: 2 },
    audit: { stdout: true },
  });
  // Each worker accepting its own connections may take all of them; round robin hands new connections
  // to the workers in turn, so that both answer some and write a chain of their own.
  const proxy = await startProxyProcess(config, { env: { POD_NAME: 'xks-proxy-0', NODE_CLUSTER_SCHED_POLICY: 'rr' } });
  try {
    // Separate connections: the workers take them in turn.
    const answers = await Promise.all(
      Array.from({ length: 24 }, (_, i) => {
        const m = keyMetadata('Encrypt', { kmsRequestId: `audit-stdout-${i}` });
        requestIds.push(m.kmsRequestId as string);
        return send(proxy.port, '/t/kms/xks/v1/keys/k/encrypt', { requestMetadata: m, plaintext: b64('hello'), encryptionAlgorithm: 'AES_GCM' }, cred);
      }),
    );
    expect(answers.map((a) => a.status)).toEqual(answers.map(() => 200));
    expect(new Set(await Promise.all(requestIds.map((id) => proxy.servedBy(id)))).size).toBe(2);
  } finally {
    await proxy.stop();
    output = proxy.output();
  }
}, 60_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const auditLines = (): string[] => output.split('\n').filter((l) => l.includes('"stream":"xks-audit"'));

test('every answered request has a chained audit line on stdout, marked and named after the pod', () => {
  const entries = auditLines().map((l) => JSON.parse(l) as Record<string, unknown>);
  for (const id of requestIds) expect(entries.filter((e) => e.kmsRequestId === id)).toHaveLength(1);
  for (const e of entries) expect(e).toMatchObject({ stream: 'xks-audit', pod: expect.stringMatching(/^xks-proxy-0\.worker\d$/), hash: expect.stringMatching(/^[0-9a-f]{64}$/) });
  // The request log shares the stream: the input really is mixed.
  expect(output.split('\n').filter((l) => l.includes('"msg":"xks request"')).length).toBeGreaterThanOrEqual(requestIds.length);
});

test('verify - picks the audit lines out of mixed, collector-prefixed output and checks each chain', () => {
  const lines = output.trimEnd().split('\n');
  // What a node's log files look like: CRI prefix on some lines, Docker json-file wrapping on others.
  const collected = lines.map((l, i) => (i % 3 === 0 ? `2026-11-30T04:00:00.000000000Z stdout F ${l}` : i % 3 === 1 ? JSON.stringify({ log: `${l}\n`, stream: 'stdout', time: '2026-11-30T04:00:00Z' }) : l));
  collected.splice(3, 0, 'some other container: not JSON at all');
  const r = admin(['audit', 'verify', '-'], collected.join('\n') + '\n');
  expect(r.code).toBe(0);
  const result = JSON.parse(r.out) as { ok: boolean; lines: number; chains: { chain: string; pod: string; lines: number }[]; otherLines: number };
  expect(result.ok).toBe(true);
  expect(result.lines).toBe(auditLines().length);
  expect(result.chains.map((c) => c.pod).sort()).toEqual(['xks-proxy-0.worker1', 'xks-proxy-0.worker2']);
  expect(result.otherLines).toBeGreaterThan(0);
});

test('a tampered audit line fails with its line number; a removed one breaks its chain', () => {
  const lines = output.trimEnd().split('\n');
  const target = lines.findIndex((l) => l.includes('"stream":"xks-audit"') && l.includes('"seq":2,'));
  expect(target).toBeGreaterThanOrEqual(0);
  const edited = lines.map((l, i) => (i === target ? l.replace('"outcome":"success"', '"outcome":"AccessDeniedException"') : l));
  expect(edited[target]).not.toBe(lines[target]);
  const r = admin(['audit', 'verify', '-'], edited.join('\n'));
  expect(r.code).toBe(1);
  expect(JSON.parse(r.out)).toMatchObject({ ok: false, line: target + 1, reason: expect.stringMatching(/hash mismatch/) });

  const removed = lines.filter((_l, i) => i !== target);
  const r2 = admin(['audit', 'verify', '-'], removed.join('\n'));
  expect(r2.code).toBe(1);
  expect((JSON.parse(r2.out) as { reason: string }).reason).toMatch(/sequence gap|chain broken/);
});

test('anchors: audit head prints each chain\'s last hash; verify with them catches cut-off last lines', () => {
  const text = output;
  const heads = admin(['audit', 'head', '-'], text);
  expect(heads.code).toBe(0);
  const anchors = join(dir, 'anchors.jsonl');
  writeFileSync(anchors, heads.out);
  expect(heads.out.trim().split('\n')).toHaveLength(2);
  expect(admin(['audit', 'verify', '-', '--anchors', anchors], text).code).toBe(0);
  // Drop the last audit line: without the anchor the rest still verifies, with it the cut shows.
  const lines = text.trimEnd().split('\n');
  const last = lines.map((l, i) => (l.includes('"stream":"xks-audit"') ? i : -1)).filter((i) => i >= 0).pop() as number;
  const cut = lines.filter((_l, i) => i !== last).join('\n');
  expect(admin(['audit', 'verify', '-'], cut).code).toBe(0);
  const r = admin(['audit', 'verify', '-', '--anchors', anchors], cut);
  expect(r.code).toBe(1);
  expect((JSON.parse(r.out) as { reason: string }).reason).toMatch(/last lines are missing/);
});

test('audit.file and audit.stdout are exclusive in the config', () => {
  const base = testConfig([keyStoreWithKeys('t', '/t', [cred], [{ id: 'k', label: 'test-key-1' }])]);
  const r = configSchema.safeParse({ ...base, audit: { file: join(dir, 'a.log'), stdout: true } });
  expect(r.success).toBe(false);
  expect(JSON.stringify(r.error?.issues)).toMatch(/exclusive/);
  expect(configSchema.parse({ ...base, audit: { stdout: true } }).audit).toEqual({ stdout: true });
  expect(configSchema.parse(base).audit).toEqual({ stdout: false });
});
