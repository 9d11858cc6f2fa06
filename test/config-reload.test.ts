/**
 * One rule for reloads (src/config/reload-rules.ts): a live setting is applied by a reload; a reload that
 * changes a restart-only setting is refused whole, naming it. One bad edit is counted once, however many
 * times the watch, the poll and SIGHUP meet it, and every counter an alert reads exists at 0 from start.
 */
import { mkdtempSync, readFileSync, rmSync, statSync, unwatchFile, utimesSync, watchFile, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { z } from 'zod';
import { ProxyApp } from '../src/app';
import { loadConfigFile } from '../src/config/load';
import { ConfigReloader } from '../src/config/reloader';
import { reloadRules } from '../src/config/reload-rules';
import { configSchema } from '../src/config/schema';
import type { ProxyConfigInput } from '../src/config/schema';
import { silentLogger } from '../src/log';
import { until } from './support/promises';
import { get, keyStoreWithKeys, newCredential, send, testConfig } from './support/proxy';

const cred = newCredential();
let dir: string;
let file: string;
let app: ProxyApp;
let reloader: ConfigReloader;
const lines: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
/** The silent logger, keeping what the reloader says. */
const logger = new Proxy(silentLogger, {
  get(target, prop) {
    if (prop === 'warn' || prop === 'error' || prop === 'info') {
      return (obj: Record<string, unknown> | string, msg?: string) => lines.push(typeof obj === 'string' ? { level: prop, obj: {}, msg: obj } : { level: prop, obj, msg: msg ?? '' });
    }
    return Reflect.get(target, prop) as unknown;
  },
});

const base = (): ProxyConfigInput => testConfig([keyStoreWithKeys('rl', '/rl', [cred], [{ id: 'k', label: 'test-key-1' }])], { proxy: { fleetSize: 2 } });
const write = (cfg: ProxyConfigInput): void => writeFileSync(file, stringify(cfg));

async function metric(name: string): Promise<string> {
  const text = (await get(app.opsPort as number, '/metrics')).text;
  return text
    .split('\n')
    .filter((l) => l.startsWith(name))
    .join('\n');
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'xks-reload-'));
  file = join(dir, 'config.yaml');
  write(base());
  const runtime = loadConfigFile(file);
  app = await ProxyApp.start({ runtime, logger: silentLogger });
  reloader = new ConfigReloader(file, runtime, (next) => app.setRuntime(next), logger, app.events);
});
afterAll(async () => {
  reloader?.dispose();
  await app?.stop(1000);
  rmSync(dir, { recursive: true, force: true });
});

test('every counter an alert reads exists at 0 before its first event, for each key store and known label value', async () => {
  for (const result of ['success', 'failure', 'restart_required']) expect(await metric('xks_config_reloads_total')).toContain(`xks_config_reloads_total{result="${result}"} 0`);
  expect(await metric('xks_config_restart_pending')).toContain('xks_config_restart_pending 0');
  expect(await metric('xks_shed_total')).toContain('xks_shed_total{key_store="rl",reason="hsm_wait"} 0');
  expect(await metric('xks_shed_total')).toContain('xks_shed_total{key_store="rl",reason="event_loop"} 0');
  expect(await metric('xks_auth_failures_total')).toContain('xks_auth_failures_total{key_store="rl",reason="signature"} 0');
  expect(await metric('xks_auth_failures_total')).toContain('xks_auth_failures_total{key_store="rl",reason="unknown_access_key"} 0');
  expect(await metric('xks_client_aborts_total')).toContain('xks_client_aborts_total{key_store="rl",stage="answer"} 0');
  const requests = await metric('xks_requests_total');
  expect(requests).toContain('xks_requests_total{key_store="rl",operation="Encrypt",error_name="DependencyTimeoutException",retryable="true"} 0');
  expect(requests).toContain('xks_requests_total{key_store="rl",operation="Decrypt",error_name="InvalidCiphertextException",retryable="false"} 0');
  expect(await metric('xks_request_duration_seconds_bucket')).toContain('xks_request_duration_seconds_bucket{le="0.2",key_store="rl",operation="Encrypt"} 0');
  expect(await metric('xks_hsm_breaker_open')).toMatch(/xks_hsm_breaker_open\{hsm_id="[^"]+"\} 0/);
});

test('live settings are applied by a reload: clockSkewSeconds, proxy.fleetSize, a new key store (its series start at 0)', async () => {
  const cfg = base();
  cfg.server = { ...cfg.server, clockSkewSeconds: 60 };
  cfg.proxy = { fleetSize: 3 };
  const other = keyStoreWithKeys('rl2', '/rl2', [newCredential()], [{ id: 'k', label: 'test-key-2' }]);
  cfg.keyStores = [...cfg.keyStores, other.keyStore];
  cfg.groups = [...(cfg.groups ?? []), other.group];
  write(cfg);
  expect(reloader.reload('test')).toBe(true);
  expect(app.runtime.config.server.clockSkewSeconds).toBe(60);
  const health = await send(app.port, '/rl/kms/xks/v1/health', { requestMetadata: { kmsRequestId: 'r', kmsOperation: 'KmsHealthCheck' } }, cred);
  expect(health.body.xksProxyFleetSize).toBe(3);
  expect(await metric('xks_shed_total')).toContain('xks_shed_total{key_store="rl2",reason="hsm_wait"} 0');
});

test('a restart-only change is refused whole, naming the settings; nothing of the file is applied until it is reverted', async () => {
  const before = app.runtime;
  const cfg = base();
  cfg.server = { ...cfg.server, maxConnections: 77, clockSkewSeconds: 30 };
  cfg.limits = { ...cfg.limits, deadlineMs: 150 };
  write(cfg);
  lines.length = 0;
  expect(reloader.reload('SIGHUP')).toBe(false);
  expect(app.runtime).toBe(before);
  expect(app.runtime.config.server.clockSkewSeconds).toBe(60); // the live change in the same file waits too
  const refusal = lines.find((l) => l.level === 'warn');
  expect(refusal?.msg).toMatch(/^configuration reload refused: server\.maxConnections, limits change only on restart/);
  expect(refusal?.obj.restartRequired).toEqual(['server.maxConnections', 'limits']);
  expect(await metric('xks_config_reloads_total{result="restart_required"}')).toMatch(/ 1$/);
  expect(await metric('xks_config_restart_pending')).toMatch(/ 1$/);

  write(base());
  expect(reloader.reload('test')).toBe(true);
  expect(app.runtime.config.server.clockSkewSeconds).toBe(300);
  expect(await metric('xks_config_restart_pending')).toMatch(/ 0$/);
});

test('one bad edit is counted once: the directory watch, the poll and SIGHUP all meet it', async () => {
  reloader.watch(100);
  try {
    // A listener of the test's own on the reloader's stat poll (node:fs keeps one per file and calls its
    // listeners in order): the mtime it last reported is one the reloader's poll has just met.
    let polledMtime = NaN;
    watchFile(file, { interval: 100, persistent: false }, (curr) => (polledMtime = curr.mtimeMs));
    // The poll takes its first stat in the background, and an edit made before that is never reported:
    // touch the file until a change is, so that it has its baseline.
    const touch = (): number => (utimesSync(file, new Date(), new Date()), polledMtime);
    expect(await until(touch, (m) => !Number.isNaN(m), 5000, 150)).not.toBeNaN();
    const count = async (): Promise<number> => Number((await metric('xks_config_reloads_total{result="failure"}')).split(' ').pop());
    const before = await count();
    writeFileSync(file, 'keyStores: [');
    const edited = statSync(file).mtimeMs;
    await until(count, (n) => n > before, 5000, 20);
    expect(await until(() => polledMtime, (m) => m === edited, 5000, 20)).toBe(edited);
    // Then ask again by hand, as an operator's SIGHUP would.
    expect(reloader.reload('SIGHUP')).toBe(false);
    expect(await count()).toBe(before + 1);
    // A second, different bad edit is a second failure.
    writeFileSync(file, 'keyStores: []');
    await until(count, (n) => n > before + 1, 5000, 20);
    expect(await count()).toBe(before + 2);
  } finally {
    unwatchFile(file);
    reloader.dispose();
    write(base());
  }
});

test('every setting has a rule: a section without one is refused by the walk', () => {
  const rules = Object.fromEntries(reloadRules().map((r) => [r.path.join('.'), r.rule]));
  // Every top-level section of the schema is covered, whole or field by field.
  const sections = Object.keys((configSchema as unknown as { def: { in: { def: { shape: object } } } }).def.in.def.shape);
  expect(sections.filter((k) => !Object.keys(rules).some((p) => p === k || p.startsWith(`${k}.`)))).toEqual([]);
  expect(() => reloadRules(z.object({ undeclared: z.number() }))).toThrow(/undeclared declares no reload rule/);
});

test('README "Configuration reference" shows the rule of every setting as the schema declares it', () => {
  const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Configuration reference'), readme.indexOf('\n## ', readme.indexOf('## Configuration reference') + 5));
  const documented: Record<string, string> = {};
  for (const row of section.matchAll(/^\| (.*) \| (live|restart) \|$/gm)) {
    for (const name of (row[1] as string).matchAll(/`([a-zA-Z.]+)`/g)) documented[name[1] as string] = row[2] as string;
  }
  expect(documented).toEqual(Object.fromEntries(reloadRules().map((r) => [r.path.join('.'), r.rule])));
});
