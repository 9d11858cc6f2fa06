/**
 * What a slow HSM login costs the rest of the proxy (issue 18). A proxy process fronts a fleet of two HSMs
 * holding the same key: "flaky", a Luna HA group (SoftHSM2 behind the vendor emulation, testbed/vendor-emu.c,
 * profile ha-flaky) and "plain" (SoftHSM2). Each round loses every member of the HA group (emulation control
 * lost=1), waits until the proxy reports it UNAVAILABLE, brings it back (lost=0) with a C_Login that takes
 * --login-ms, and from then until GetHealthStatus reports it ACTIVE again probes, each back to back with
 * --gap-ms between answers on a keep-alive connection of its own: GET /healthz and /readyz, a signed
 * GetHealthStatus, and a signed encrypt ("plain" serves it). The same probes run for --baseline-ms with both
 * HSMs serving first. Prints p50 / p99 / max per probe and phase, one JSON line each, and a table.
 *
 *   npm run bench:slow-login -- [--login-ms 3000] [--rounds 3] [--baseline-ms 3000] [--gap-ms 10]
 *
 * Loopback only; the proxy and this client are separate processes, so a stalled proxy event loop shows in
 * every answer it delays.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { generateCredential } from '../src/sigv4/credentials';
import { emuParameters, SOFTHSM_MODULE, tokenWithKey, vendorEmuModule, writeEmuControls } from '../testbed/hsm-setups';
import { httpStatus, installCleanup, startChild, stopAll, stopChild, waitFor } from './lib/processes';
import { freePortPair } from '../testbed/ports';
import { productJs } from './lib/paths';
import { encryptBody, signRequest } from './lib/workload';

const arg = (name: string, def: string): number => {
  const i = process.argv.indexOf(`--${name}`);
  return Number(i >= 0 ? process.argv[i + 1] : def);
};
const loginMs = arg('login-ms', '3000');
const rounds = arg('rounds', '3');
const baselineMs = arg('baseline-ms', '3000');
const gapMs = arg('gap-ms', '10');
const mainJs = productJs('main.js');
const health = JSON.stringify({ requestMetadata: { kmsRequestId: 'bench', kmsOperation: 'KmsHealthCheck' } });

function request(agent: http.Agent, port: number, path: string, body?: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: body === undefined ? 'GET' : 'POST', headers, agent }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

type Probe = () => Promise<boolean>;
interface Series {
  ms: number[];
  failed: number;
}

/** Runs each probe back to back (gapMs apart) until stop() says so. */
async function sampleAll(probes: Record<string, Probe>, stop: () => boolean): Promise<Record<string, Series>> {
  const entries = await Promise.all(
    Object.entries(probes).map(async ([name, probe]) => {
      const s: Series = { ms: [], failed: 0 };
      while (!stop()) {
        const started = process.hrtime.bigint();
        const ok = await probe().catch(() => false);
        s.ms.push(Number(process.hrtime.bigint() - started) / 1e6);
        if (!ok) s.failed++;
        await new Promise((r) => setTimeout(r, gapMs));
      }
      return [name, s] as const;
    }),
  );
  return Object.fromEntries(entries);
}

function summary(s: Series): { n: number; failed: number; p50: number; p99: number; max: number } {
  const sorted = [...s.ms].sort((a, b) => a - b);
  const at = (q: number): number => Number((sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN).toFixed(2));
  return { n: sorted.length, failed: s.failed, p50: at(0.5), p99: at(0.99), max: Number((sorted.at(-1) ?? NaN).toFixed(2)) };
}

async function main(): Promise<void> {
  installCleanup(() => stopAll());
  const dir = mkdtempSync(join(tmpdir(), 'xks-bench-slow-login-'));
  try {
    mkdirSync(join(dir, 'tokens'));
    const conf = join(dir, 'softhsm2.conf');
    writeFileSync(conf, `directories.tokendir = ${dir}/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
    const shared = randomBytes(32);
    const [flaky, plain] = [tokenWithKey(conf, 'ha-group', 'shared-key', shared), tokenWithKey(conf, 'plain', 'shared-key', shared)];
    const controls = join(dir, 'controls');
    writeEmuControls(controls, {});

    const port = await freePortPair();
    const cred = generateCredential();
    const member = { environment: { SOFTHSM2_CONF: conf }, sessionPoolSize: 8, healthKeyLabel: 'health-key', healthCacheMs: 200, reconnectBackoffMs: 50 };
    const config = {
      server: { host: '127.0.0.1', port, insecurePlainHttp: true, workers: 1 },
      ops: { host: '127.0.0.1', port: port + 1 },
      hsms: [
        { id: 'flaky', modulePath: vendorEmuModule('ha-flaky'), libraryParameters: emuParameters('ha-flaky', controls), tokenLabel: flaky.label, pin: { value: flaky.pin }, ...member },
        { id: 'plain', modulePath: SOFTHSM_MODULE, tokenLabel: plain.label, pin: { value: plain.pin }, ...member },
      ],
      keyStores: [{ name: 'bench', pathPrefix: '/bench', credentials: [{ accessKeyId: cred.accessKeyId, secretAccessKey: { value: cred.secretAccessKey } }], groups: ['bench-keys'] }],
      groups: [{ name: 'bench-keys', policy: { rules: [{ id: 'allow-all', effect: 'allow' }] }, keys: [{ id: 'k', label: 'shared-key' }] }],
    };
    const configFile = join(dir, 'config.yaml');
    writeFileSync(configFile, stringify(config), { mode: 0o600 });
    const logFile = join(dir, 'proxy.log');
    const logFd = openSync(logFile, 'a');
    const proxy = startChild([mainJs, '--config', configFile], { stdout: logFd, env: { ...process.env, XKS_LOG_LEVEL: 'warn' } });
    closeSync(logFd);
    try {
      await waitFor('proxy', proxy, async () => (await httpStatus(port + 1, '/readyz')) === 200, 30_000);
    } catch (e) {
      throw new Error(`${(e as Error).message}: ${readFileSync(logFile, 'utf8').slice(-1500)}`, { cause: e });
    }

    const agent = (): http.Agent => new http.Agent({ keepAlive: true, maxSockets: 1 });
    const signed = (a: http.Agent, path: string, body: () => string): Probe => async () => {
      const b = body();
      return (await request(a, port, path, b, signRequest(`127.0.0.1:${port}`, path, b, cred))).status === 200;
    };
    const [healthzAgent, readyzAgent, healthAgent, encryptAgent, stateAgent] = [agent(), agent(), agent(), agent(), agent()];
    const probes: Record<string, Probe> = {
      '/healthz': async () => (await request(healthzAgent, port, '/healthz')).status === 200,
      '/readyz': async () => (await request(readyzAgent, port + 1, '/readyz')).status === 200,
      GetHealthStatus: signed(healthAgent, '/bench/kms/xks/v1/health', () => health),
      Encrypt: signed(encryptAgent, '/bench/kms/xks/v1/keys/k/encrypt', () => encryptBody()),
    };
    const flakyStatus = async (): Promise<string | undefined> => {
      const path = '/bench/kms/xks/v1/health';
      const r = await request(stateAgent, port, path, health, signRequest(`127.0.0.1:${port}`, path, health, cred));
      const body = JSON.parse(r.text) as { ekmFleetDetails?: { id: string; healthStatus: string }[] };
      return body.ekmFleetDetails?.find((d) => d.id === 'flaky')?.healthStatus;
    };
    const until = async (ok: () => Promise<boolean>, ms: number): Promise<void> => {
      const end = Date.now() + ms;
      while (!(await ok())) {
        if (Date.now() > end) throw new Error('timed out waiting for the HA group');
        await new Promise((r) => setTimeout(r, 20));
      }
    };

    const results: { phase: string; probe: string; s: ReturnType<typeof summary> }[] = [];
    const record = (phase: string, series: Record<string, Series>): void => {
      for (const [probe, s] of Object.entries(series)) {
        const line = { phase, probe, s: summary(s) };
        results.push(line);
        console.log(JSON.stringify({ phase, probe, loginMs, ...line.s }));
      }
    };

    await until(async () => (await flakyStatus()) === 'ACTIVE', 30_000);
    const baselineEnd = Date.now() + baselineMs;
    record('baseline', await sampleAll(probes, () => Date.now() > baselineEnd));

    const reconnects: number[] = [];
    const merged: Record<string, Series> = {};
    for (let round = 0; round < rounds; round++) {
      writeEmuControls(controls, { lost: true, login_delay_ms: loginMs });
      await until(async () => (await flakyStatus()) === 'UNAVAILABLE', 30_000);
      writeEmuControls(controls, { lost: false, login_delay_ms: loginMs });
      const started = Date.now();
      let back = false;
      const watching = (async () => {
        await until(async () => (await flakyStatus()) === 'ACTIVE', 60_000);
        back = true;
      })();
      const series = await sampleAll(probes, () => back);
      await watching;
      reconnects.push(Date.now() - started);
      for (const [name, s] of Object.entries(series)) {
        const m = (merged[name] ??= { ms: [], failed: 0 });
        m.ms.push(...s.ms);
        m.failed += s.failed;
      }
    }
    record(`reconnect (${loginMs}-ms login)`, merged);
    for (const a of [healthzAgent, readyzAgent, healthAgent, encryptAgent, stateAgent]) a.destroy();
    await stopChild(proxy);

    const rows = results.map(
      ({ phase, probe, s }) =>
        `${phase.padEnd(26)} ${probe.padEnd(16)} n ${String(s.n).padStart(4)}  failed ${s.failed}  p50 ${s.p50.toFixed(2)} ms  p99 ${s.p99.toFixed(2)} ms  max ${s.max.toFixed(2)} ms`,
    );
    console.log(
      `\nthe HA group came back ${rounds} times in ${reconnects.map((r) => `${r} ms`).join(', ')} (C_Login ${loginMs} ms, from lost=0 to ACTIVE in GetHealthStatus)\n${rows.join('\n')}`,
    );
  } finally {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: Error) => {
  console.error(e.stack ?? e.message);
  process.exitCode = 1;
});
