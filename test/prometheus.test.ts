/**
 * The dashboard and the alerts against a real Prometheus (Debian's package) scraping a real proxy: a
 * short signed load on a TLS proxy, plus injected failures (bad signatures, an unknown access key, an
 * unknown key, a disabled key store, a bad config edit, a governed edit naming a key twice, a restart-only
 * config edit). Then every dashboard
 * query and every alert expression is evaluated through Prometheus's HTTP API: each returns data, or is
 * listed below as expected-empty with the reason. For an alert, "data" means the expression without its
 * threshold (what the alert compares), and the full expression is reported too: the injected failures make
 * several fire.
 */
import { ChildProcess, spawn } from 'node:child_process';
import { createCipheriv, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { ProxyApp } from '../src/app';
import { loadConfigFile } from '../src/config/load';
import { ConfigReloader } from '../src/config/reloader';
import type { ProxyConfigInput } from '../src/config/schema';
import { generateApproverKey } from '../src/governance/signatures';
import { UsageRecorder } from '../src/governance/usage';
import { silentLogger } from '../src/log';
import { freePort } from '../testbed/ports';
import { testHsm } from './support/hsm';
import { makePki, Pki } from './support/pki';
import { until } from './support/promises';
import { b64, keyMetadata, keyStoreWithKeys, newCredential, send, testConfig } from './support/proxy';
import { requireTools } from './support/tools';

const root = path.resolve(__dirname, '..');
const JOB = 'xks-proxy';
const SCRAPE_S = 1;
/** What the dashboard's $__rate_interval becomes: several scrapes, well inside the run. */
const RATE_INTERVAL = '20s';

/** Queries allowed to return nothing, and why. Anything else that returns nothing fails the test. */
const EXPECTED_EMPTY: Record<string, string> = {
  'alert XksProxyLatencyHigh': 'a healthy proxy on SoftHSM2 answers in milliseconds, far under 200 ms',
  'alert XksProxyRetryableErrors': 'no throttling, HSM timeout or internal error is injected',
  'alert XksProxyEkmUnavailable': 'the HSM stays healthy',
  'alert XksProxyHsmQueueBacklog': 'the load is far below what the session pool serves, so no queue stands',
  'alert XksProxyEventLoopLag': 'the event loop is not stalled at this load (on a busy machine it may be: then it has data)',
  'alert XksProxyShedding': 'nothing is shed at this load',
  'alert XksProxyHsmMisconfigured': 'the HSM is configured right',
  'alert XksProxyHsmOutOfFleet': 'one HSM, its breaker never opens',
  'alert XksProxyClientAborts': 'no client leaves before its answer',
  'alert XksProxyGovernanceOldRootPinned': 'no governance root is pinned here (and the alert waits a day)',
  'alert XksProxyGovernanceStateBehind': 'no group is quorum-protected here (and the alert waits 15 minutes)',
  'alert XksProxyGovernanceUnprotected': 'no group is quorum-protected here (and the alert waits a day)',
};

const { bins } = requireTools('prometheus.test.ts', ['prometheus']);
const describeLive = bins ? describe : describe.skip;

/** A check value (src/engine/check-value.ts) sealed with node:crypto under the test token's known key. */
function knownKeyCheckValue(): string {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', Buffer.from(testHsm().knownKeyHex, 'hex'), iv);
  c.setAAD(Buffer.from('xks-proxy key check value v1'));
  const sealed = Buffer.concat([c.update(Buffer.alloc(32)), c.final()]);
  return Buffer.concat([iv, sealed, c.getAuthTag()]).toString('base64');
}

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

describeLive('a real Prometheus scraping a real proxy under load and failures', () => {
  const cred = newCredential();
  const offCred = newCredential();
  let dir: string;
  let pki: Pki;
  let app: ProxyApp;
  let reloader: ConfigReloader;
  let usage: UsageRecorder;
  let prometheus: ChildProcess;
  let promPort: number;
  let promLog = '';
  let configFile: string;
  let base: ProxyConfigInput;
  const tls = { rejectUnauthorized: false };

  async function query(expr: string): Promise<Sample[]> {
    const res = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const body = (await res.json()) as { status: string; error?: string; data?: { result: Sample[] } };
    if (body.status !== 'success') throw new Error(`Prometheus refused ${expr}: ${body.error}`);
    return body.data!.result;
  }

  /** Waits for Prometheus to show `ok` (a real wait: it scrapes every second on its own clock; the machine may be busy). */
  async function scraped(what: string, ok: () => Promise<boolean>): Promise<void> {
    // A query that throws: Prometheus not up yet.
    if (!(await until(() => ok().catch(() => false), Boolean, 30_000, 250))) throw new Error(`Prometheus: ${what} within 30 s. Its log:\n${promLog.slice(-2000)}`);
  }

  const value = async (expr: string): Promise<number> => Number((await query(expr))[0]?.value[1] ?? NaN);

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'xks-prom-'));
    pki = makePki();
    configFile = path.join(dir, 'config.yaml');
    // k-sub: test-key-3 recorded with a check value of another key (known-key's): a substituted key, refused.
    const ks = keyStoreWithKeys('prom', '/prom', [cred], [
      { id: 'k1', label: 'test-key-1', rotation: { maxEncryptions: 100 } },
      { id: 'k-sub', versions: [{ version: 1, label: 'test-key-3', checkValue: knownKeyCheckValue() }] },
    ]);
    // An old credential, so the credential-age alert has something to say.
    ks.keyStore.credentials[0] = { ...ks.keyStore.credentials[0]!, createdAt: new Date(Date.now() - 100 * 86_400_000).toISOString() };
    const off = keyStoreWithKeys('off', '/off', [offCred], [{ id: 'k1', label: 'test-key-2' }], { keyStore: { status: 'DISABLED' } });
    base = testConfig([ks, off], {
      server: { insecurePlainHttp: false, tls: { certFile: pki.serverCert, keyFile: pki.serverKey } },
      governance: { usageDir: path.join(dir, 'usage') },
    });
    writeFileSync(configFile, stringify(base));
    const runtime = loadConfigFile(configFile);
    app = await ProxyApp.start({ runtime, logger: silentLogger });
    reloader = new ConfigReloader(configFile, runtime, (next) => app.setRuntime(next), silentLogger, app.events);
    usage = new UsageRecorder(app.events, () => app.runtime, { dir: path.join(dir, 'usage'), registry: app.metrics.registry, flushMs: 500 });

    promPort = await freePort();
    const promConfig = {
      global: { scrape_interval: `${SCRAPE_S}s`, evaluation_interval: `${SCRAPE_S}s` },
      rule_files: [path.join(root, 'helm', 'xks-proxy', 'rules', 'xks-proxy.rules.yaml')],
      scrape_configs: [
        {
          job_name: JOB,
          scrape_timeout: '900ms',
          // The labels the Prometheus Operator adds from the ServiceMonitor, which the rules group by.
          static_configs: [{ targets: [`127.0.0.1:${app.opsPort}`], labels: { namespace: 'kms', pod: 'xks-xks-proxy-0' } }],
        },
      ],
    };
    writeFileSync(path.join(dir, 'prometheus.yml'), stringify(promConfig));
    prometheus = spawn(
      bins!.prometheus,
      [`--config.file=${path.join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${promPort}`, '--log.level=warn'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    prometheus.stdout!.on('data', (c: Buffer) => (promLog += c.toString()));
    prometheus.stderr!.on('data', (c: Buffer) => (promLog += c.toString()));
    await scraped('the proxy scraped', async () => (await value(`up{job="${JOB}"}`)) === 1);

    // ---- a short signed load, with the failures mixed in
    const P = '/prom/kms/xks/v1';
    const encrypt = { requestMetadata: keyMetadata('Encrypt'), plaintext: b64('hello'), encryptionAlgorithm: 'AES_GCM' };
    // Real time: rate() over the dashboard's interval needs several of Prometheus's scrapes of this load.
    const stopAt = Date.now() + 6000;
    let sealed: Record<string, unknown> | undefined;
    let round = 0;
    while (Date.now() < stopAt) {
      round++;
      const batch: Promise<unknown>[] = [];
      for (let i = 0; i < 8; i++) batch.push(send(app.port, `${P}/keys/k1/encrypt`, encrypt, cred, { tls }).then((r) => (sealed ??= r.body)));
      batch.push(send(app.port, `${P}/keys/k1/metadata`, { requestMetadata: keyMetadata('DescribeKey') }, cred, { tls }));
      batch.push(send(app.port, `${P}/health`, { requestMetadata: { kmsRequestId: `r${round}`, kmsOperation: 'KmsHealthCheck' } }, cred, { tls }));
      if (sealed) {
        const { ciphertext, ciphertextMetadata, initializationVector, authenticationTag } = sealed as Record<string, string>;
        batch.push(send(app.port, `${P}/keys/k1/decrypt`, { requestMetadata: keyMetadata('Decrypt'), encryptionAlgorithm: 'AES_GCM', ciphertext, ciphertextMetadata, initializationVector, authenticationTag }, cred, { tls }));
      }
      // Failures: a wrong signature, an unknown access key, an unknown key, the disabled key store.
      batch.push(send(app.port, `${P}/keys/k1/encrypt`, encrypt, { ...cred, secretAccessKey: offCred.secretAccessKey }, { tls }));
      batch.push(send(app.port, `${P}/keys/k1/encrypt`, encrypt, newCredential(), { tls }));
      batch.push(send(app.port, `${P}/keys/no-such-key/encrypt`, encrypt, cred, { tls }));
      batch.push(send(app.port, '/off/kms/xks/v1/keys/k1/encrypt', encrypt, offCred, { tls }));
      await Promise.all(batch);
      // A bad edit, then a valid one that changes a restart-only setting, whatever the machine's speed.
      if (round === 1) batch.push(send(app.port, `${P}/keys/k-sub/encrypt`, encrypt, cred, { tls }));
      if (round === 2) {
        writeFileSync(configFile, 'keyStores: [');
        expect(reloader.reload('test: a bad edit')).toBe(false);
      }
    }
    // Under governance (an auditor is enough), a second entry naming k1's HSM key: a key-owner refusal.
    const shadow = { name: 'shadow', policy: { rules: [{ id: 'all', effect: 'allow' as const }] }, keys: [{ id: 'shadow', label: 'test-key-1' }] };
    const administrators = [{ name: 'audit', role: 'auditor' as const, publicKey: generateApproverKey().publicKey }];
    writeFileSync(configFile, stringify({ ...base, governance: { ...base.governance, administrators }, groups: [...(base.groups ?? []), shadow] }));
    expect(reloader.reload('test: a shadow of a key under governance')).toBe(false);
    writeFileSync(configFile, stringify({ ...base, limits: { ...base.limits, deadlineMs: 150 } }));
    expect(reloader.reload('test: a restart-only edit')).toBe(false);
    usage.flush();
    // Everything above is in Prometheus once a scrape after it has landed.
    const failures = Number((await (await fetch(`http://127.0.0.1:${app.opsPort}/metrics`)).text()).match(/^xks_auth_failures_total\{key_store="prom",reason="signature"\} (\d+)/m)?.[1]);
    expect(failures).toBeGreaterThanOrEqual(10);
    await scraped('the last injected failures scraped', async () => (await value(`sum(xks_auth_failures_total{reason="signature"})`)) >= failures);
    await scraped('the restart-only edit scraped', async () => (await value('max(xks_config_restart_pending)')) === 1);
  }, 90_000);

  afterAll(async () => {
    prometheus?.kill('SIGTERM');
    await new Promise((r) => (prometheus && prometheus.exitCode === null ? prometheus.once('exit', r) : r(undefined)));
    usage?.dispose();
    reloader?.dispose();
    await app?.stop(1000);
    if (pki) rmSync(pki.dir, { recursive: true, force: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const dashboard = JSON.parse(readFileSync(path.join(root, 'helm', 'xks-proxy', 'dashboards', 'xks-proxy.json'), 'utf8')) as { panels: { title: string; targets: { expr: string }[] }[] };
  const rules = (parse(readFileSync(path.join(root, 'helm', 'xks-proxy', 'rules', 'xks-proxy.rules.yaml'), 'utf8')) as { groups: { rules: { alert: string; expr: string }[] }[] }).groups.flatMap((g) => g.rules);
  const panelQueries = dashboard.panels.flatMap((p) => p.targets.map((t, i) => ({ name: `panel "${p.title}" #${i + 1}`, expr: t.expr.replace(/\$__rate_interval/g, RATE_INTERVAL).replace(/\$job/g, JOB) })));

  test.each(panelQueries)('$name returns data', async ({ name, expr }) => {
    const result = await query(expr);
    if (!EXPECTED_EMPTY[name]) expect({ expr, empty: result.length === 0 }).toEqual({ expr, empty: false });
  });

  /** The alert's expression without its last threshold: what it compares (`x > 0.2` -> `x`). */
  const measured = (expr: string): string => expr.replace(/\s*(==|!=|>=|<=|>|<)\s*[\d.]+\s*$/, '');

  test.each(rules.map((r) => r.alert))('alert %s: what it compares has data; it fires or is listed as expected-empty', async (alert) => {
    const rule = rules.find((r) => r.alert === alert)!;
    expect(measured(rule.expr)).not.toBe(rule.expr);
    expect((await query(measured(rule.expr))).length).toBeGreaterThan(0);
    const firing = (await query(rule.expr)).length > 0;
    // Quiet is fine only where the list says why.
    if (!firing) expect({ alert, listedAsExpectedEmpty: `alert ${alert}` in EXPECTED_EMPTY }).toEqual({ alert, listedAsExpectedEmpty: true });
  });

  test('the injected failures make their alerts fire', async () => {
    for (const alert of ['XksProxyAuthenticationFailures', 'XksProxyNonRetryableErrors', 'XksProxyConfigReloadFailed', 'XksProxyConfigRestartPending', 'XksProxyCredentialOld', 'XksProxyCertificateExpiring', 'XksProxyKeyUsageHigh', 'XksProxyGovernanceRefusal', 'XksProxyKeyCheckFailed']) {
      const rule = rules.find((r) => r.alert === alert)!;
      expect({ alert, firing: (await query(rule.expr)).length > 0 }).toEqual({ alert, firing: true });
    }
  });

  test('the rules file loads into Prometheus without errors', async () => {
    const res = (await (await fetch(`http://127.0.0.1:${promPort}/api/v1/rules`)).json()) as { data: { groups: { rules: { name: string; health: string; lastError?: string }[] }[] } };
    const loaded = res.data.groups.flatMap((g) => g.rules);
    expect(loaded.map((r) => r.name).sort()).toEqual(rules.map((r) => r.alert).sort());
    expect(loaded.filter((r) => r.health === 'err')).toEqual([]);
  });
});
