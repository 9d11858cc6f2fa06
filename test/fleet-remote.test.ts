import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse, stringify } from 'yaml';
import type { ProxyConfigInput } from '../src/config/schema';
import { createSetup, HsmSetup, restartSetup, stopSetup } from '../testbed/hsm-setups';
import { FLEET_WAIT_MS, Load, roundTrip } from './fleet-helpers';
import { testHsm } from './support/hsm';
import { until } from './support/promises';
import { get, newCredential, send } from './support/proxy';
import { ProxyProcess, startProxyProcess } from './support/proxy-process';

/**
 * The fleet with a network HSM in it: HSM "local" is a SoftHSM2 token loaded into the proxy, HSM "remote"
 * a SoftHSM2 token in a p11-kit server process reached over a socket. Stopping that server is a real loss
 * of the HSM, starting it again its return. The proxy and xks-admin run as processes of their own
 * (`npm run build` first): jest hands test code a copy of process.env, so a p11-kit client library loaded
 * in the test process would never see P11_KIT_SERVER_ADDRESS.
 */
const exec = promisify(execFile);
const ROOT = join(__dirname, '..');
const ADMIN = join(ROOT, 'dist', 'src', 'tools', 'admin.js');
const P = '/r/kms/xks/v1';
const cred = newCredential();

let dir: string;
let remote: HsmSetup;
let proxy: ProxyProcess;
let port: number;
let opsPort: number;

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
  const member = { sessionPoolSize: 4, healthKeyLabel: 'health-key', healthCacheMs: 200, reconnectBackoffMs: 50, asyncCalls: true };
  const config = {
    server: { host: '127.0.0.1', insecurePlainHttp: true },
    ops: { host: '127.0.0.1' },
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
  // The file as xks-admin left it, on ports of the process helper's choosing.
  proxy = await startProxyProcess(parse(readFileSync(file, 'utf8')) as ProxyConfigInput, { dir });
  ({ port, opsPort } = proxy);
}, 60_000);

afterAll(async () => {
  await proxy?.stop();
  if (remote) stopSetup(remote);
  rmSync(dir, { recursive: true, force: true });
});

it('loses the network HSM under load without failing a request: DEGRADED, then ACTIVE when its server is back', async () => {
  expect((await until(health, (h) => h.ekmFleetDetails?.every((d) => d.healthStatus === 'ACTIVE') === true, FLEET_WAIT_MS)).ekmFleetDetails?.map((d) => d.id)).toEqual(['local', 'remote']);
  const load = new Load(6, () => roundTrip(port, P, 'k1', cred));
  expect(await until(() => opsOf('remote'), (n) => n > 0, FLEET_WAIT_MS)).toBeGreaterThan(0);
  stopSetup(remote);
  const down = await until(health, (h) => h.ekmFleetDetails?.find((d) => d.id === 'remote')?.healthStatus === 'UNAVAILABLE', FLEET_WAIT_MS);
  expect(down.ekmFleetDetails?.map((d) => d.healthStatus)).toEqual(['ACTIVE', 'UNAVAILABLE']);
  expect((await get(opsPort, '/metrics')).text).toMatch(/xks_ekm_health_status\{state="DEGRADED"\} 1/);
  expect((await get(opsPort, '/readyz')).status).toBe(200);
  // Requests keep coming while the HSM is gone: 30 more round trips, all served by local.
  await load.more(30);
  remote = await restartSetup(remote);
  const back = await until(health, (h) => h.ekmFleetDetails?.every((d) => d.healthStatus === 'ACTIVE') === true, FLEET_WAIT_MS);
  expect(back.ekmFleetDetails?.map((d) => d.healthStatus)).toEqual(['ACTIVE', 'ACTIVE']);
  const before = await opsOf('remote');
  // Back in the fleet: the remote HSM takes requests again.
  expect(await until(() => opsOf('remote'), (n) => n > before, FLEET_WAIT_MS)).toBeGreaterThan(before);
  const { count, failures } = await load.stop();
  expect(failures).toEqual([]);
  expect(count).toBeGreaterThan(50);
}, 60_000);
