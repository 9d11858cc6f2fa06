import { ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { createSetup, HsmSetup, restartSetup, stopSetup } from '../testbed/hsm-setups';
import { roundTrip, until } from './fleet-helpers';
import { testHsm } from './support/hsm';
import { get, newCredential, send } from './support/proxy';

/**
 * The fleet with a network HSM in it: HSM "local" is a SoftHSM2 token loaded into the proxy, HSM "remote"
 * a SoftHSM2 token in a p11-kit server process reached over a socket. Stopping that server is a real loss
 * of the HSM, starting it again its return. The proxy and xks-admin run as processes of their own
 * (`npm run build` first): jest hands test code a copy of process.env, so a p11-kit client library loaded
 * in the test process would never see P11_KIT_SERVER_ADDRESS.
 */
const exec = promisify(execFile);
const ROOT = join(__dirname, '..');
const MAIN = join(ROOT, 'dist', 'src', 'main.js');
const ADMIN = join(ROOT, 'dist', 'src', 'tools', 'admin.js');
const P = '/r/kms/xks/v1';
const cred = newCredential();

let dir: string;
let remote: HsmSetup;
let proxy: ChildProcess;
let port: number;
let opsPort: number;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}



const health = async () =>
  (await send(port, `${P}/health`, { requestMetadata: { kmsRequestId: 'h', kmsOperation: 'KmsHealthCheck' } }, cred)).body as { ekmFleetDetails?: { id: string; healthStatus: string }[] };

const opsOf = async (id: string): Promise<number> => {
  const text = (await get(opsPort, '/metrics')).text;
  return [...text.matchAll(new RegExp(`xks_hsm_operation_duration_seconds_count\\{operation="(?:encrypt|decrypt)",hsm_id="${id}"\\} (\\d+)`, 'g'))].reduce((n, m) => n + Number(m[1]), 0);
};

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'xks-fleet-remote-'));
  const t = testHsm();
  const local = { tokenLabel: `fleet-local-${randomBytes(4).toString('hex')}`, pin: randomBytes(8).toString('hex'), soPin: randomBytes(8).toString('hex') };
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', local.tokenLabel, '--pin', local.pin, '--so-pin', local.soPin], { env: { ...process.env, ...t.environment }, stdio: 'ignore' });
  remote = await createSetup('p11kit', join(dir, 'remote'));
  [port, opsPort] = [await freePort(), await freePort()];
  const member = { sessionPoolSize: 4, healthKeyLabel: 'health-key', healthCacheMs: 200, reconnectBackoffMs: 50, asyncCalls: true };
  const config = {
    server: { host: '127.0.0.1', port, insecurePlainHttp: true },
    ops: { host: '127.0.0.1', port: opsPort },
    limits: { deadlineMs: 2000 },
    hsms: [
      { id: 'local', modulePath: t.modulePath, environment: t.environment, tokenLabel: local.tokenLabel, pin: { value: local.pin }, ...member },
      { id: 'remote', modulePath: remote.modulePath, environment: remote.environment, tokenLabel: remote.tokenLabel, pin: { value: remote.pin }, ...member },
    ],
    keyStores: [{ name: 'r', pathPrefix: '/r', credentials: [{ accessKeyId: cred.accessKeyId, secretAccessKey: { value: cred.secretAccessKey } }], groups: ['g'] }],
    groups: [{ name: 'g', policy: { rules: [{ id: 'all', effect: 'allow' }] }, keys: [] }],
  };
  const file = join(dir, 'config.yaml');
  writeFileSync(file, stringify(config));
  const admin = (env: Record<string, string>, ...args: string[]) => exec('node', [ADMIN, '--config', file, ...args], { env: { ...process.env, ...env } });
  // The security officer's step, then key create: generated on local, replicated over the socket to remote.
  await admin({ XKS_HSM_SO_PIN: local.soPin }, 'hsm', 'trust-replication', '--source', 'local', '--target', 'remote');
  await admin({}, 'key', 'create', 'k1', '--group', 'g');
  proxy = spawn('node', [MAIN, '--config', file], { stdio: ['ignore', 'ignore', 'inherit'] });
  expect((await until(() => get(opsPort, '/readyz').catch(() => ({ status: 0, text: '', ms: 0 })), (r) => r.status === 200)).status).toBe(200);
}, 60_000);

afterAll(async () => {
  proxy?.kill('SIGTERM');
  if (proxy) await new Promise((r) => proxy.once('exit', r));
  if (remote) stopSetup(remote);
  rmSync(dir, { recursive: true, force: true });
});

it('loses the network HSM under load without failing a request: DEGRADED, then ACTIVE when its server is back', async () => {
  expect((await until(health, (h) => h.ekmFleetDetails?.every((d) => d.healthStatus === 'ACTIVE') === true)).ekmFleetDetails?.map((d) => d.id)).toEqual(['local', 'remote']);
  let stopped = false;
  const failures: string[] = [];
  let count = 0;
  const load = Promise.all(
    Array.from({ length: 6 }, async () => {
      while (!stopped) {
        const f = await roundTrip(port, P, 'k1', cred);
        count++;
        if (f) failures.push(f);
      }
    }),
  );
  await new Promise((r) => setTimeout(r, 500));
  expect(await opsOf('remote')).toBeGreaterThan(0);
  stopSetup(remote);
  const down = await until(health, (h) => h.ekmFleetDetails?.find((d) => d.id === 'remote')?.healthStatus === 'UNAVAILABLE');
  expect(down.ekmFleetDetails?.map((d) => d.healthStatus)).toEqual(['ACTIVE', 'UNAVAILABLE']);
  expect((await get(opsPort, '/metrics')).text).toMatch(/xks_ekm_health_status\{state="DEGRADED"\} 1/);
  expect((await get(opsPort, '/readyz')).status).toBe(200);
  await new Promise((r) => setTimeout(r, 500));
  remote = await restartSetup(remote);
  const back = await until(health, (h) => h.ekmFleetDetails?.every((d) => d.healthStatus === 'ACTIVE') === true);
  expect(back.ekmFleetDetails?.map((d) => d.healthStatus)).toEqual(['ACTIVE', 'ACTIVE']);
  const before = await opsOf('remote');
  await new Promise((r) => setTimeout(r, 1000));
  stopped = true;
  await load;
  expect(failures).toEqual([]);
  expect(count).toBeGreaterThan(50);
  expect(await opsOf('remote')).toBeGreaterThan(before);
}, 60_000);
