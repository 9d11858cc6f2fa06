/**
 * Latency of one encrypt per HSM setup (testbed/hsm-setups.ts): SoftHSM2 in process, NSS softoken, SoftHSM2
 * behind p11-kit remoting, and the emulated vendors (SoftHSM2 behind testbed/vendor-emu.c), one per IV
 * source: CloudHSM and nShield (the HSM writes the IV into a zeroed pIv), Luna in FIPS mode (the HSM
 * appends it). For each setup it times, one request at a time:
 *   - the PKCS#11 calls alone (C_EncryptInit + C_Encrypt of 32 bytes, from this process, with the IV
 *     source the engine's probe learns there: src/engine/gcm.ts), and
 *   - signed XKS encrypts through a real proxy process (node dist/src/main.js, one worker), over one
 *     keep-alive connection, with hsm.asyncCalls true and false.
 * Every target is set up first, then measured in interleaved rounds.
 *
 *   npm run build:bench && node dist-bench/bench/hsm-setups.js [--requests 2000] [--setups softhsm,p11kit,nss,cloudhsm,luna-fips,nshield]
 *
 * Loopback only. Prints one JSON line per measurement and a table; a setup that fails is reported and skipped.
 */
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { stringify } from 'yaml';
import { Gcm } from '../src/engine/gcm';
import { generateKek } from '../src/engine/token';
import { generateCredential } from '../src/sigv4/credentials';
import { createSetup, isEmulated, openSetupSession, setupName, stopSetup, type HsmSetup, type SetupName } from '../testbed/hsm-setups';
import { httpStatus, installCleanup, startChild, stopAll, stopChild, waitFor } from './lib/processes';
import { freePortPair } from '../testbed/ports';
import { encryptBody, signRequest } from './lib/workload';
import { productJs } from './lib/paths';

const arg = (name: string, def: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] as string) : def;
};
const requests = Number(arg('requests', '2000'));
// ha-flaky is about reconnects, not the hot path: bench/slow-login.ts.
const setups = arg('setups', 'softhsm,p11kit,nss,cloudhsm,luna-fips,nshield').split(',').map((s) => setupName(s));
const mainJs = productJs('main.js');
const ROUNDS = 10;

interface Stats {
  p50Us: number;
  p99Us: number;
  meanUs: number;
}

function stats(samplesNs: bigint[]): Stats {
  const us = samplesNs.map((n) => Number(n) / 1000).sort((a, b) => a - b);
  const at = (q: number): number => Math.round(us[Math.min(us.length - 1, Math.floor(q * us.length))] as number);
  return { p50Us: at(0.5), p99Us: at(0.99), meanUs: Math.round(us.reduce((a, b) => a + b, 0) / us.length) };
}

type Sampler = (n: number) => Promise<bigint[]>;

/** The PKCS#11 round trips an encrypt costs on this setup, without the proxy: the engine's GCM code, inline. */
async function rawEncrypt(setup: HsmSetup): Promise<{ sample: Sampler; close: () => void; ivSource: string }> {
  const t = openSetupSession(setup);
  const key = generateKek(t, 'bench-raw-key');
  const gcm = new Gcm(t.mod, 'v240', false);
  const behaviour = await gcm.probe(t.session, key);
  const aad = Buffer.alloc(0);
  const sample: Sampler = async (n) => {
    const out: bigint[] = [];
    for (let i = 0; i < n; i++) {
      const plaintext = randomBytes(32);
      const started = process.hrtime.bigint();
      await gcm.encrypt(t.session, key, plaintext, aad, behaviour);
      out.push(process.hrtime.bigint() - started);
    }
    return out;
  };
  return { sample, close: () => t.close(), ivSource: behaviour.ivSource };
}

function post(agent: http.Agent, port: number, path: string, body: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'POST', headers, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Another process may take the free port before the proxy binds it: try another. */
async function startProxy(setup: HsmSetup, asyncCalls: boolean): Promise<{ sample: Sampler; close: () => Promise<void> }> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await proxyTarget(setup, asyncCalls);
    } catch (e) {
      if (attempt === 3 || !(e as Error).message.includes('EADDRINUSE')) throw e;
    }
  }
}

async function proxyTarget(setup: HsmSetup, asyncCalls: boolean): Promise<{ sample: Sampler; close: () => Promise<void> }> {
  const port = await freePortPair();
  const cred = generateCredential();
  const hsm: Record<string, unknown> = {
    modulePath: setup.modulePath,
    environment: setup.environment,
    tokenLabel: setup.tokenLabel,
    pin: { value: setup.pin },
    healthKeyLabel: 'health-key',
    asyncCalls,
  };
  if (setup.libraryParameters !== undefined) hsm.libraryParameters = setup.libraryParameters;
  const config = {
    server: { host: '127.0.0.1', port, insecurePlainHttp: true, workers: 1 },
    ops: { host: '127.0.0.1', port: port + 1 },
    hsm,
    keyStores: [{ name: 'bench', pathPrefix: '/bench', credentials: [{ accessKeyId: cred.accessKeyId, secretAccessKey: { value: cred.secretAccessKey } }], groups: ['bench-keys'] }],
    groups: [{ name: 'bench-keys', policy: { rules: [{ id: 'allow-all', effect: 'allow' }] }, keys: [{ id: 'k', label: 'test-key-1' }] }],
  };
  const configFile = join(setup.dir, `bench-${asyncCalls}.yaml`);
  writeFileSync(configFile, stringify(config), { mode: 0o600 });
  const logFile = join(setup.dir, `proxy-${asyncCalls}.log`);
  const logFd = openSync(logFile, 'a');
  const proxy = startChild([mainJs, '--config', configFile], { stdout: logFd, env: { ...process.env, XKS_LOG_LEVEL: 'warn' } });
  closeSync(logFd);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const close = async (): Promise<void> => {
    agent.destroy();
    await stopChild(proxy);
  };
  try {
    await waitFor('proxy', proxy, async () => (await httpStatus(port + 1, '/readyz')) === 200, 15_000);
  } catch (e) {
    await close();
    throw new Error(`${(e as Error).message}: ${readFileSync(logFile, 'utf8').slice(-1500)}`, { cause: e });
  }
  const path = '/bench/kms/xks/v1/keys/k/encrypt';
  const sample: Sampler = async (n) => {
    const out: bigint[] = [];
    for (let i = 0; i < n; i++) {
      const body = encryptBody();
      const headers = signRequest(`127.0.0.1:${port}`, path, body, cred);
      const started = process.hrtime.bigint();
      const status = await post(agent, port, path, body, headers);
      if (status !== 200) throw new Error(`encrypt answered ${status}`);
      out.push(process.hrtime.bigint() - started);
    }
    return out;
  };
  return { sample, close };
}

interface Target {
  setup: SetupName;
  what: string;
  sample: Sampler;
  samples: bigint[];
  error?: string;
}

async function main(): Promise<void> {
  installCleanup(() => stopAll());
  const made: HsmSetup[] = [];
  const closers: (() => unknown)[] = [];
  const targets: Target[] = [];
  const notes: string[] = [];
  try {
    // Every token first: SoftHSM2 (one instance per process, read at C_Initialize) holds the in-process
    // SoftHSM2-backed setups in one configuration, and must see all of them when this process first loads it.
    let softhsmConf: string | undefined;
    const created: HsmSetup[] = [];
    for (const name of setups) {
      const dir = mkdtempSync(join(tmpdir(), `xks-bench-${name}-`));
      try {
        const setup = await createSetup(name, dir, name === 'softhsm' || isEmulated(name) ? softhsmConf : undefined);
        if (name === 'softhsm' || isEmulated(name)) softhsmConf ??= setup.environment.SOFTHSM2_CONF;
        made.push(setup);
        created.push(setup);
      } catch (e) {
        notes.push(`${name.padEnd(9)} setup failed: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    // SoftHSM2's own setup first: its key creation ends with C_Finalize, which would end the emulated
    // setups' sessions on the same SoftHSM2 (their module's C_Finalize ends only its own).
    created.sort((a, b) => Number(b.setup === 'softhsm') - Number(a.setup === 'softhsm'));
    for (const setup of created) {
      const name = setup.setup;
      try {
        const t = openSetupSession(setup);
        try {
          for (const label of ['test-key-1', 'health-key']) generateKek(t, label);
        } finally {
          t.close();
        }
        const raw = await rawEncrypt(setup);
        closers.push(raw.close);
        targets.push({ setup: name, what: `pkcs11 only (${raw.ivSource})`, sample: raw.sample, samples: [] });
        for (const asyncCalls of [true, false]) {
          const what = `proxy asyncCalls=${asyncCalls}`;
          try {
            const p = await startProxy(setup, asyncCalls);
            closers.push(p.close);
            targets.push({ setup: name, what, sample: p.sample, samples: [] });
          } catch (e) {
            notes.push(`${name.padEnd(9)} ${what.padEnd(32)} failed: ${(e as Error).message.split('\n')[0]}`);
          }
        }
      } catch (e) {
        notes.push(`${name.padEnd(9)} setup failed: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    // Rounds interleave the targets, so that load from elsewhere on the machine falls on all of them alike.
    for (const t of targets) await t.sample(200).catch((e: Error) => (t.error = e.message));
    for (let round = 0; round < ROUNDS; round++) {
      for (const t of targets) {
        if (t.error) continue;
        try {
          t.samples.push(...(await t.sample(Math.ceil(requests / ROUNDS))));
        } catch (e) {
          t.error = (e as Error).message;
        }
      }
    }
  } finally {
    for (const close of closers.reverse()) await close();
    for (const s of made) {
      stopSetup(s);
      rmSync(s.dir, { recursive: true, force: true });
    }
  }
  const rows = targets.map((t) => {
    if (t.error) return `${t.setup.padEnd(9)} ${t.what.padEnd(32)} failed: ${t.error}`;
    const s = stats(t.samples);
    console.log(JSON.stringify({ setup: t.setup, what: t.what, requests: t.samples.length, ...s }));
    return `${t.setup.padEnd(9)} ${t.what.padEnd(32)} p50 ${(s.p50Us / 1000).toFixed(3)} ms  p99 ${(s.p99Us / 1000).toFixed(3)} ms  mean ${(s.meanUs / 1000).toFixed(3)} ms`;
  });
  console.log(`\n${requests} sequential encrypts of 32 bytes per target, in ${ROUNDS} interleaved rounds after 200 not counted\n${[...rows, ...notes].join('\n')}`);
}

main().catch((e: Error) => {
  console.error(e.stack ?? e.message);
  process.exitCode = 1;
});
