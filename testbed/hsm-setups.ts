/**
 * The PKCS#11 implementations the integration suites run against (XKS_TEST_HSM_SETUP):
 *   softhsm  SoftHSM2 loaded into the proxy's process;
 *   nss      NSS softoken (libsoftokn3.so) on a fresh NSS database;
 *   p11kit   SoftHSM2 in a `p11-kit server` process, reached through p11-kit-client.so over a socket:
 *            every PKCS#11 call crosses process boundaries, as with a network HSM;
 *   cloudhsm, luna-fips, nshield, ha-flaky
 *            SoftHSM2 behind the vendor-emulation module (testbed/vendor-emu.c), which imposes that
 *            HSM's documented behaviour: who chooses the GCM IV, PIN format, sessions, failures.
 * Each creates its token in a directory of its own and says how a proxy config reaches it.
 */
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import * as pkcs11js from 'pkcs11js';
import { generateKek, kekTemplate, openTokenSession, type TokenSession } from '../src/engine/token';

/** The vendor-emulation profiles (testbed/vendor-emu.c). */
const EMULATED = ['cloudhsm', 'luna-fips', 'nshield', 'ha-flaky'] as const;
export type EmulatedProfile = (typeof EMULATED)[number];
const SETUPS = ['softhsm', 'nss', 'p11kit', ...EMULATED] as const;
export type SetupName = (typeof SETUPS)[number];

const EMULATION = 'xks-proxy vendor emulation';
/** C_GetInfo's manufacturerID of the module each setup loads: proves the run is on the setup it names. */
const LIBRARY_MANUFACTURER: Record<SetupName, string> = {
  softhsm: 'SoftHSM',
  nss: 'Mozilla Foundation',
  p11kit: 'PKCS#11 Kit',
  ...(Object.fromEntries(EMULATED.map((p) => [p, EMULATION])) as Record<EmulatedProfile, string>),
};

export const SOFTHSM_MODULE = process.env.SOFTHSM2_MODULE ?? '/usr/lib/softhsm/libsofthsm2.so';

/** The hsm section of a proxy config for this setup, and what the harness needs to stop it. */
export interface HsmSetup {
  setup: SetupName;
  dir: string;
  modulePath: string;
  environment: Record<string, string>;
  /** C_Initialize pReserved (hsm.libraryParameters); NSS refuses to start without it. */
  libraryParameters?: string;
  tokenLabel: string;
  pin: string;
  /** What the token says about itself (C_GetTokenInfo), as GetHealthStatus reports it. */
  ekm: { vendor: string; model: string };
  /** p11kit: the server, started as a process group leader so that its per-client children stop with it. */
  serverPid?: number;
  serverLog?: string;
}

// testbed/ from source (jest), dist-bench/testbed/ when compiled (bench): the scripts stay in testbed/.
const here = existsSync(join(__dirname, 'p11-kit.sh')) ? __dirname : join(__dirname, '..', '..', 'testbed');

export function setupName(value = process.env.XKS_TEST_HSM_SETUP ?? 'softhsm'): SetupName {
  if (!(SETUPS as readonly string[]).includes(value)) throw new Error(`XKS_TEST_HSM_SETUP must be one of ${SETUPS.join(', ')}, not "${value}"`);
  return value as SetupName;
}

/**
 * `softhsmConf`: put the token in this SoftHSM2 configuration's directory instead of a new one, under a
 * label of its own (SoftHSM2 is one instance per process, with one configuration: a process using several
 * SoftHSM2-backed setups at once, as the bench does, needs them all in one place).
 */
export async function createSetup(name: SetupName, dir: string, softhsmConf?: string): Promise<HsmSetup> {
  if (name === 'nss') return nss(dir);
  const token = softhsmToken(softhsmConf ?? newSoftHsmConf(join(dir, 'softhsm')), isEmulated(name) ? `xks-${name}` : 'xks-test');
  if (name === 'softhsm') return { setup: name, dir, modulePath: SOFTHSM_MODULE, environment: { SOFTHSM2_CONF: token.conf }, tokenLabel: token.label, pin: token.pin, ekm: SOFTHSM_EKM };
  if (isEmulated(name)) return emulated(name, dir, token);
  return p11kitServer(dir, token);
}

export function isEmulated(name: string): name is EmulatedProfile {
  return (EMULATED as readonly string[]).includes(name);
}

/** The controls an emulated setup starts with: ha-flaky invalidates the session of 1% of its crypto calls. */
const STARTING_CONTROLS: Record<EmulatedProfile, EmuControls> = { cloudhsm: {}, 'luna-fips': {}, nshield: {}, 'ha-flaky': { flaky_per_mille: 10 } };

/**
 * SoftHSM2 behind the vendor-emulation module (a file per profile), profile and control file in
 * C_Initialize's pReserved (hsm.libraryParameters) rather than the module's environment variables, since
 * several profiles may share a process. CloudHSM's PIN is "<crypto user>:<password>"; the module passes
 * on the password, which is the SoftHSM2 token's PIN.
 */
function emulated(profile: EmulatedProfile, dir: string, token: SoftHsmToken): HsmSetup {
  const control = join(dir, 'emu-control');
  writeEmuControls(control, STARTING_CONTROLS[profile]);
  return {
    setup: profile,
    dir,
    modulePath: vendorEmuModule(profile),
    environment: { SOFTHSM2_CONF: token.conf },
    libraryParameters: emuParameters(profile, control),
    tokenLabel: token.label,
    pin: profile === 'cloudhsm' ? `xks_cu:${token.pin}` : token.pin,
    ekm: { vendor: 'xks-proxy emulation', model: profile },
  };
}

/**
 * Builds the vendor-emulation module once (testbed/vendor-emu.sh caches it) and returns its path: the
 * profile's own copy, or the module whose profile comes from C_Initialize or XKS_EMU_PROFILE.
 */
export function vendorEmuModule(profile?: EmulatedProfile): string {
  const module = execFileSync('bash', [join(here, 'vendor-emu.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, SOFTHSM2_MODULE: SOFTHSM_MODULE },
  }).trim();
  return profile ? module.replace(/\.so$/, `-${profile}.so`) : module;
}

/** hsm.libraryParameters choosing the emulated profile and its control file. */
export function emuParameters(profile: EmulatedProfile, controlFile: string): string {
  return `profile=${profile} control=${controlFile}`;
}

/** What the emulation reads from its control file (testbed/vendor-emu.c). */
export interface EmuControls {
  lost?: boolean;
  login_delay_ms?: number;
  flaky_per_mille?: number;
  iv_bytes?: 12 | 16;
}

/** Replaces the control file whole (a new inode each time, which is how the module notices). */
export function writeEmuControls(file: string, controls: EmuControls): void {
  const text = Object.entries(controls)
    .map(([k, v]) => `${k}=${typeof v === 'boolean' ? Number(v) : v}\n`)
    .join('');
  const tmp = `${file}.${randomBytes(4).toString('hex')}`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

export function stopSetup(s: HsmSetup): void {
  if (s.serverPid === undefined) return;
  try {
    process.kill(-s.serverPid, 'SIGTERM');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
  }
}

/**
 * Starts a stopped p11kit setup's server again on the same socket and token: to a proxy, the HSM that
 * went away (stopSetup) comes back.
 */
export async function restartSetup(s: HsmSetup): Promise<HsmSetup> {
  if (s.setup !== 'p11kit') throw new Error(`${s.setup}: only the p11kit setup runs in a process of its own`);
  rmSync(join(s.dir, 'p11-kit.sock'), { force: true });
  return p11kitServer(s.dir, { conf: join(s.dir, 'softhsm', 'softhsm2.conf'), label: s.tokenLabel, pin: s.pin });
}

/**
 * A logged-in read-write session, opened the way the proxy's engine opens the module (OS locking,
 * library parameters), for creating the test keys.
 */
export function openSetupSession(s: HsmSetup): TokenSession {
  // The same loading and C_Initialize (library parameters included) as the proxy's engine.
  const t = openTokenSession({ modulePath: s.modulePath, tokenLabel: s.tokenLabel, environment: s.environment, libraryParameters: s.libraryParameters }, s.pin);
  const manufacturer = t.mod.C_GetInfo().manufacturerID.replace(/\0/g, '').trim();
  if (manufacturer !== LIBRARY_MANUFACTURER[s.setup]) {
    t.close();
    throw new Error(`${s.setup}: ${s.modulePath} is made by "${manufacturer}", not ${LIBRARY_MANUFACTURER[s.setup]}`);
  }
  return t;
}

// p11-kit forwards C_GetTokenInfo: the remote token is still SoftHSM2's.
const SOFTHSM_EKM = { vendor: 'SoftHSM project', model: 'SoftHSM' };

interface SoftHsmToken {
  conf: string;
  label: string;
  pin: string;
}

/** A SoftHSM2 configuration with a token directory of its own, in dir. */
function newSoftHsmConf(dir: string): string {
  mkdirSync(join(dir, 'tokens'), { recursive: true });
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${dir}/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  return conf;
}

function softhsmToken(conf: string, label: string): SoftHsmToken {
  const token = { conf, label, pin: randomBytes(8).toString('hex') };
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', token.label, '--pin', token.pin, '--so-pin', randomBytes(8).toString('hex')], {
    env: { ...process.env, SOFTHSM2_CONF: conf },
    stdio: 'ignore',
  });
  return token;
}

/**
 * A SoftHSM2 token in this configuration's directory holding the health key and an AES-256 key of the
 * given value, made sensitive and non-extractable (the tests' fleets, whose HSMs hold one key).
 */
export function tokenWithKey(conf: string, label: string, keyLabel: string, value: Buffer): { label: string; pin: string } {
  const token = softhsmToken(conf, label);
  const t = openTokenSession({ modulePath: SOFTHSM_MODULE, tokenLabel: label, environment: { SOFTHSM2_CONF: conf } }, token.pin);
  try {
    generateKek(t, 'health-key');
    t.mod.C_CreateObject(t.session, [...kekTemplate(keyLabel), { type: pkcs11js.CKA_VALUE, value }]);
  } finally {
    t.close();
  }
  return { label, pin: token.pin };
}

/** Where Debian's libnss3 puts the softoken (multiarch directory), or NSS_SOFTOKN_MODULE. */
function findSoftoken(): string | undefined {
  const candidates = [process.env.NSS_SOFTOKN_MODULE, `/usr/lib/${multiarch()}/libsoftokn3.so`, '/usr/lib64/libsoftokn3.so', '/usr/lib/libsoftokn3.so'];
  return candidates.find((p): p is string => p !== undefined && existsSync(p));
}

export function softokenPath(): string {
  const found = findSoftoken();
  if (!found) throw new Error(`nss: ${nssMissing()}`);
  return found;
}

/** Why the nss setup cannot run on this machine, or undefined when it can. */
export function nssMissing(): string | undefined {
  if (!findSoftoken()) return 'NSS softoken libsoftokn3.so is absent (apt-get install libnss3, or set NSS_SOFTOKN_MODULE)';
  const path = (process.env.PATH ?? '').split(':');
  if (!path.some((dir) => existsSync(join(dir, 'certutil')))) return 'certutil is absent (apt-get install libnss3-tools)';
  return undefined;
}

function multiarch(): string {
  try {
    return execFileSync('gcc', ['-print-multiarch'], { encoding: 'utf8' }).trim();
  } catch {
    return `${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`;
  }
}

/**
 * An NSS database protected by a password, which is the token's user PIN. Its key store is the
 * "NSS Certificate DB" token; NSS finds the database only through C_Initialize's library parameters.
 */
function nss(dir: string): HsmSetup {
  const db = join(dir, 'nssdb');
  mkdirSync(db, { recursive: true });
  const pin = randomBytes(8).toString('hex');
  const pinFile = join(dir, 'nss-pin');
  writeFileSync(pinFile, `${pin}\n`, { mode: 0o600 });
  execFileSync('certutil', ['-N', '-d', `sql:${db}`, '-f', pinFile], { stdio: 'ignore' });
  return {
    setup: 'nss',
    dir,
    modulePath: softokenPath(),
    environment: {},
    libraryParameters: `configdir='sql:${db}' certPrefix='' keyPrefix='' secmod='secmod.db' flags=`,
    tokenLabel: 'NSS Certificate DB',
    pin,
    ekm: { vendor: 'Mozilla Foundation', model: 'NSS' },
  };
}

/** Builds p11-kit >= 0.25 once (testbed/p11-kit.sh caches it) and returns its prefix. */
function p11kitPrefix(): string {
  return execFileSync('bash', [join(here, 'p11-kit.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

async function p11kitServer(dir: string, token: SoftHsmToken): Promise<HsmSetup> {
  const prefix = p11kitPrefix();
  const socket = join(dir, 'p11-kit.sock');
  const serverLog = join(dir, 'p11-kit-server.log');
  const logFd = openSync(serverLog, 'a');
  const server = spawn(join(prefix, 'bin', 'p11-kit'), ['server', '--foreground', '--name', socket, '--provider', SOFTHSM_MODULE, `pkcs11:token=${token.label}`], {
    env: { ...process.env, SOFTHSM2_CONF: token.conf },
    stdio: ['ignore', 'ignore', logFd],
    detached: true,
  });
  closeSync(logFd);
  server.unref();
  let exited: number | null = null;
  server.on('exit', (code) => (exited = code ?? -1));
  const until = Date.now() + 10_000;
  while (!existsSync(socket)) {
    if (exited !== null || Date.now() > until) {
      const setup = { serverPid: server.pid } as HsmSetup;
      stopSetup(setup);
      throw new Error(`p11kit: the server did not open ${socket} (exit ${exited}): ${readFileSync(serverLog, 'utf8').slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    setup: 'p11kit',
    dir,
    modulePath: join(prefix, 'lib', 'pkcs11', 'p11-kit-client.so'),
    environment: { P11_KIT_SERVER_ADDRESS: `unix:path=${socket}` },
    tokenLabel: token.label,
    pin: token.pin,
    ekm: SOFTHSM_EKM,
    serverPid: server.pid,
    serverLog,
  };
}
