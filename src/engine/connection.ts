import * as pkcs11js from 'pkcs11js';
import type { ProxyEvents } from '../events';
import type { Logger } from '../log';
import type { ControlThread } from './control-thread';
import { EngineError } from './errors';
import { bindingSendsV230, Gcm, GcmBehaviour, IvSource } from './gcm';
import { KeyLookup, RecordedKey } from './key-lookup';
import { fieldText, HsmConfig, initializeArgs, Pkcs11Module } from './module';
import { ckrName, classify, describeFailure } from './pkcs11-errors';
import { SessionPool } from './session-pool';
import type { EkmInfo } from './types';

type Handle = pkcs11js.Handle;

export interface ConnectionDeps {
  pin: string;
  /** Requests allowed to wait for a session before the engine answers busy. */
  maxQueue: number;
  logger: Logger;
  /** Creates the module object; tests pass a fault-injecting wrapper around the real one. */
  createModule?: () => Pkcs11Module;
  /** hsm.state is published here on every change of state. */
  events?: ProxyEvents;
  /** The HSM's id in events (a fleet member's id); the token label when absent. */
  hsmId?: string;
  /** What the store recorded for a key version label: the CKA_ID the key must carry, the check value it must open. */
  recordOf?: (label: string) => RecordedKey | undefined;
}

/** A failure at connect that retrying alone will not fix: the message names what the operator must change. */
export class Misconfiguration extends Error {}

/** Health checks are deduplicated by the monitor; a few direct callers may wait their turn. */
const HEALTH_CHECKS_WAITING = 4;

const RO_SESSION = pkcs11js.CKF_SERIAL_SESSION;
const RW_SESSION = pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION;
/** CKS_RO_USER_FUNCTIONS and CKS_RW_USER_FUNCTIONS (PKCS#11 values; pkcs11js has no constants): a logged-in application's sessions. */
const LOGGED_IN = new Set([1, 3]);

/**
 * One PKCS#11 login with its sessions and what was learned about the module; replaced whole after a fault.
 * The calls that log in and open or close sessions run on the connector's control thread, never on the
 * event loop (src/engine/control-thread.ts); AES-GCM and key lookups run here, as for every request.
 *
 * Besides the customer pool it keeps one reserved session for the deep health check: a check that
 * queued behind customer traffic would report an overloaded HSM as a broken one, and a load balancer
 * acting on that moves the load to the next replica and takes it down in turn.
 */
export class HsmConnection {
  readonly pool: SessionPool<Handle>;
  /** The reserved session, as a pool of one so that concurrent checks take turns. */
  readonly healthLane: SessionPool<Handle>;
  dead = false;

  private constructor(
    private readonly control: ControlThread,
    readonly slot: Handle,
    reserved: Handle,
    sessions: Handle[],
    private readonly sessionFlags: number,
    readonly keys: KeyLookup,
    readonly healthKey: Handle,
    readonly gcm: GcmBehaviour,
    readonly info: EkmInfo,
    maxQueue: number,
  ) {
    this.pool = new SessionPool(sessions, { maxWaiting: maxQueue });
    this.healthLane = new SessionPool([reserved], { maxWaiting: HEALTH_CHECKS_WAITING });
  }

  /**
   * Initialises the module, finds the token, checks AES-GCM, opens and logs in the sessions, and probes
   * GCM (`preferredIv`: the IV source the last connection learned, tried first).
   */
  static async open(mod: Pkcs11Module, control: ControlThread, hsm: HsmConfig, deps: ConnectionDeps, gcm: Gcm, preferredIv?: IvSource): Promise<HsmConnection> {
    if (hsm.gcmParams === 'v230' && !bindingSendsV230()) {
      throw new Misconfiguration('gcmParams v230: this pkcs11js binary was not seen to send the v2.30 layout; npm ci patches, builds and checks it (with softhsm2 installed)');
    }
    await control.initialize(initializeArgs(hsm));
    const slot = await findTokenSlot(control, hsm.tokenLabel);
    if (slot === undefined) throw new Misconfiguration(`C_GetSlotList: no token labelled "${hsm.tokenLabel}" is present`);
    await requireAesGcm(control, slot);
    const { sessions, flags } = await openSessions(control, slot, hsm.sessionPoolSize + 1, deps.logger);
    try {
      // The reserved health session lives as long as the connection (pool sessions get replaced after
      // errors), so it also holds the login and, when the health key is missing, the session key.
      const [first, ...pooled] = sessions as [Handle, ...Handle[]];
      await control.call('C_Login', first, pkcs11js.CKU_USER, deps.pin).catch((e: unknown) => {
        if (ckrName(e) !== 'CKR_USER_ALREADY_LOGGED_IN') throw e;
      });
      const keys = new KeyLookup(mod, deps, hsm);
      let healthKey = keys.find(first, hsm.healthKeyLabel);
      if (healthKey === undefined) {
        deps.logger.warn({ label: hsm.healthKeyLabel }, 'health-check key not found; using a session key generated in the HSM');
        healthKey = keys.generateSessionKey(first);
      }
      const behaviour = await probeGcm(gcm, first, healthKey, hsm.ivSource, preferredIv);
      const token = await control.call('C_GetTokenInfo', slot);
      const info: EkmInfo = {
        vendor: hsm.vendor ?? fieldText(token.manufacturerID),
        id: `${fieldText(token.label)}/${fieldText(token.serialNumber)}`,
        model: `${fieldText(token.model)} fw ${token.firmwareVersion.major}.${token.firmwareVersion.minor}`,
      };
      return new HsmConnection(control, slot, first, pooled, flags, keys, healthKey, behaviour, info, deps.maxQueue);
    } catch (e) {
      await closeSessions(control, sessions);
      throw e;
    }
  }

  /**
   * A session that saw an unexpected error may hold an active operation, and one the module invalidated is
   * gone: close it and open a fresh one. Null when none can be opened, or when the fresh one is not logged
   * in (the login went with the last of our sessions): the connection is lost then.
   */
  async replaceSession(session: Handle): Promise<Handle | null> {
    await this.control.call('C_CloseSession', session).catch(() => undefined);
    try {
      const fresh = await this.control.call('C_OpenSession', this.slot, this.sessionFlags);
      // A teardown that ran meanwhile has already closed the others.
      if (!this.dead && LOGGED_IN.has((await this.control.call('C_GetSessionInfo', fresh)).state)) return fresh;
      await closeSessions(this.control, [fresh]);
    } catch {
      /* no session: the caller reports the connection lost */
    }
    return null;
  }

  /**
   * Closes the sessions once every session handed out is back, so no call of ours runs in the module any
   * more (closing or finalizing under a running call can crash a module).
   */
  async teardown(): Promise<void> {
    this.dead = true;
    const reset = new EngineError('unavailable', 'the HSM connection was reset');
    const idle = [...this.pool.drain(reset), ...this.healthLane.drain(reset)];
    const handedOut = (): number => this.pool.stats().inUse + this.healthLane.stats().inUse;
    for (let waited = 0; handedOut() > 0 && waited < 5000; waited += 20) await sleep(20);
    await closeSessions(this.control, idle);
    await this.control.call('C_CloseAllSessions', this.slot).catch(() => undefined);
  }
}

/** The slot holding the token with this label, or undefined. */
async function findTokenSlot(control: ControlThread, tokenLabel: string): Promise<Handle | undefined> {
  for (const slot of await control.call('C_GetSlotList', true)) {
    if (fieldText((await control.call('C_GetTokenInfo', slot)).label) === tokenLabel) return slot;
  }
  return undefined;
}

/** Best effort (teardown, or a failed connect). */
async function closeSessions(control: ControlThread, sessions: readonly Handle[]): Promise<void> {
  for (const s of sessions) await control.call('C_CloseSession', s).catch(() => undefined);
}

async function requireAesGcm(control: ControlThread, slot: Handle): Promise<void> {
  if (!(await control.call('C_GetMechanismList', slot)).includes(pkcs11js.CKM_AES_GCM)) {
    throw new Misconfiguration('C_GetMechanismList: the token does not offer CKM_AES_GCM, which the proxy needs');
  }
  const { flags } = await control.call('C_GetMechanismInfo', slot, pkcs11js.CKM_AES_GCM);
  if ((flags & pkcs11js.CKF_ENCRYPT) === 0 || (flags & pkcs11js.CKF_DECRYPT) === 0) {
    throw new Misconfiguration('C_GetMechanismInfo: CKM_AES_GCM on this token lacks CKF_ENCRYPT or CKF_DECRYPT');
  }
}

/**
 * Crypto needs only read-only sessions, and some HSMs cap read-write ones, so those are tried first;
 * a module that refuses them gets read-write sessions (and the log says so).
 */
async function openSessions(control: ControlThread, slot: Handle, count: number, log: Logger): Promise<{ sessions: Handle[]; flags: number }> {
  let flags = RO_SESSION;
  const sessions: Handle[] = [];
  try {
    sessions.push(await control.call('C_OpenSession', slot, flags));
  } catch (e) {
    if (classify(e) === 'connection') throw e;
    log.warn({ err: describeFailure(e) }, 'the HSM refused a read-only session; using read-write sessions');
    flags = RW_SESSION;
    sessions.push(await control.call('C_OpenSession', slot, flags));
  }
  try {
    while (sessions.length < count) sessions.push(await control.call('C_OpenSession', slot, flags));
  } catch (e) {
    // An HSM that caps sessions (CKR_SESSION_COUNT) below hsm.sessionPoolSize still serves with fewer:
    // the reserved health session and at least one for customers.
    if (sessions.length >= 2 && classify(e) !== 'connection') {
      log.warn({ err: describeFailure(e), opened: sessions.length, wanted: count }, 'the HSM refused more sessions; serving with fewer than hsm.sessionPoolSize');
      return { sessions, flags };
    }
    await closeSessions(control, sessions);
    throw e;
  }
  return { sessions, flags };
}

async function probeGcm(gcm: Gcm, session: Handle, key: Handle, forced: IvSource | undefined, preferred: IvSource | undefined): Promise<GcmBehaviour> {
  try {
    return await gcm.probe(session, key, forced, preferred);
  } catch (e) {
    if (ckrName(e) !== undefined) throw e;
    throw new Misconfiguration(`AES-GCM probe: ${describeFailure(e)}`);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());
