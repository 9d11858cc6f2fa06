import * as pkcs11js from 'pkcs11js';
import type { ProxyEvents } from '../events';
import type { Logger } from '../log';
import { EngineError } from './errors';
import { bindingSendsV230, Gcm, GcmBehaviour } from './gcm';
import { KeyLookup } from './key-lookup';
import { fieldText, findTokenSlot, HsmConfig, initializeModule, Pkcs11Module } from './module';
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
  /** The CKA_ID recorded for a key version label, which the key found by that label must carry. */
  objectIdOf?: (label: string) => Buffer | undefined;
}

/** A failure at connect that retrying alone will not fix: the message names what the operator must change. */
export class Misconfiguration extends Error {}

/** Health checks are deduplicated by the monitor; a few direct callers may wait their turn. */
const HEALTH_CHECKS_WAITING = 4;

const RO_SESSION = pkcs11js.CKF_SERIAL_SESSION;
const RW_SESSION = pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION;

/**
 * One PKCS#11 login with its sessions and what was learned about the module; replaced whole after a fault.
 *
 * Besides the customer pool it keeps one reserved session for the deep health check: a check that
 * queued behind customer traffic would report an overloaded HSM as a broken one, and a load balancer
 * acting on that moves the load to the next replica and takes it down in turn.
 */
export class HsmConnection {
  readonly pool: SessionPool<Handle>;
  /** The reserved session, as a pool of one so that concurrent checks take turns. */
  readonly healthLane: SessionPool<Handle>;
  inFlight = 0;
  dead = false;

  private constructor(
    private readonly mod: Pkcs11Module,
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

  /** Initialises the module, finds the token, checks AES-GCM, opens and logs in the sessions, and probes GCM. */
  static open(mod: Pkcs11Module, hsm: HsmConfig, deps: ConnectionDeps, gcm: Gcm): HsmConnection {
    if (hsm.gcmParams === 'v230' && !bindingSendsV230()) {
      throw new Misconfiguration('gcmParams v230: this pkcs11js binary was not seen to send the v2.30 layout; npm ci patches, builds and checks it (with softhsm2 installed)');
    }
    initializeModule(mod, hsm);
    const slot = findTokenSlot(mod, hsm.tokenLabel);
    if (slot === undefined) throw new Misconfiguration(`C_GetSlotList: no token labelled "${hsm.tokenLabel}" is present`);
    requireAesGcm(mod, slot);
    const { sessions, flags } = openSessions(mod, slot, hsm.sessionPoolSize + 1, deps.logger);
    try {
      // The reserved health session lives as long as the connection (pool sessions get replaced after
      // errors), so it also holds the login and, when the health key is missing, the session key.
      const [first, ...pooled] = sessions as [Handle, ...Handle[]];
      try {
        mod.C_Login(first, pkcs11js.CKU_USER, deps.pin);
      } catch (e) {
        if (ckrName(e) !== 'CKR_USER_ALREADY_LOGGED_IN') throw e;
      }
      const keys = new KeyLookup(mod, deps.objectIdOf);
      let healthKey = keys.find(first, hsm.healthKeyLabel);
      if (healthKey === undefined) {
        deps.logger.warn({ label: hsm.healthKeyLabel }, 'health-check key not found; using a session key generated in the HSM');
        healthKey = keys.generateSessionKey(first);
      }
      const behaviour = probeGcm(gcm, first, healthKey);
      const token = mod.C_GetTokenInfo(slot);
      const info: EkmInfo = {
        vendor: hsm.vendor ?? fieldText(token.manufacturerID),
        id: `${fieldText(token.label)}/${fieldText(token.serialNumber)}`,
        model: `${fieldText(token.model)} fw ${token.firmwareVersion.major}.${token.firmwareVersion.minor}`,
      };
      return new HsmConnection(mod, slot, first, pooled, flags, keys, healthKey, behaviour, info, deps.maxQueue);
    } catch (e) {
      for (const s of sessions) safely(() => mod.C_CloseSession(s));
      throw e;
    }
  }

  /** A session that saw an unexpected error may hold an active operation: close it and open a fresh one (null if that fails). */
  replaceSession(session: Handle): Handle | null {
    safely(() => this.mod.C_CloseSession(session));
    try {
      return this.mod.C_OpenSession(this.slot, this.sessionFlags);
    } catch {
      return null;
    }
  }

  /** Closes the sessions once in-flight calls are back (finalizing under a running call can crash a module). */
  async teardown(): Promise<void> {
    this.dead = true;
    const reset = new EngineError('unavailable', 'the HSM connection was reset');
    const idle = [...this.pool.drain(reset), ...this.healthLane.drain(reset)];
    for (let waited = 0; this.inFlight > 0 && waited < 5000; waited += 20) await sleep(20);
    for (const s of idle) safely(() => this.mod.C_CloseSession(s));
    safely(() => this.mod.C_CloseAllSessions(this.slot));
  }
}

function requireAesGcm(mod: Pkcs11Module, slot: Handle): void {
  if (!mod.C_GetMechanismList(slot).includes(pkcs11js.CKM_AES_GCM)) {
    throw new Misconfiguration('C_GetMechanismList: the token does not offer CKM_AES_GCM, which the proxy needs');
  }
  const { flags } = mod.C_GetMechanismInfo(slot, pkcs11js.CKM_AES_GCM);
  if ((flags & pkcs11js.CKF_ENCRYPT) === 0 || (flags & pkcs11js.CKF_DECRYPT) === 0) {
    throw new Misconfiguration('C_GetMechanismInfo: CKM_AES_GCM on this token lacks CKF_ENCRYPT or CKF_DECRYPT');
  }
}

/**
 * Crypto needs only read-only sessions, and some HSMs cap read-write ones, so those are tried first;
 * a module that refuses them gets read-write sessions (and the log says so).
 */
function openSessions(mod: Pkcs11Module, slot: Handle, count: number, log: Logger): { sessions: Handle[]; flags: number } {
  let flags = RO_SESSION;
  const sessions: Handle[] = [];
  try {
    sessions.push(mod.C_OpenSession(slot, flags));
  } catch (e) {
    if (classify(e) === 'connection') throw e;
    log.warn({ err: describeFailure(e) }, 'the HSM refused a read-only session; using read-write sessions');
    flags = RW_SESSION;
    sessions.push(mod.C_OpenSession(slot, flags));
  }
  try {
    while (sessions.length < count) sessions.push(mod.C_OpenSession(slot, flags));
  } catch (e) {
    // An HSM that caps sessions (CKR_SESSION_COUNT) below hsm.sessionPoolSize still serves with fewer:
    // the reserved health session and at least one for customers.
    if (sessions.length >= 2 && classify(e) !== 'connection') {
      log.warn({ err: describeFailure(e), opened: sessions.length, wanted: count }, 'the HSM refused more sessions; serving with fewer than hsm.sessionPoolSize');
      return { sessions, flags };
    }
    for (const s of sessions) safely(() => mod.C_CloseSession(s));
    throw e;
  }
  return { sessions, flags };
}

function probeGcm(gcm: Gcm, session: Handle, key: Handle): GcmBehaviour {
  try {
    return gcm.probe(session, key);
  } catch (e) {
    if (ckrName(e) !== undefined) throw e;
    throw new Misconfiguration(`AES-GCM probe: ${describeFailure(e)}`);
  }
}

export function safely(fn: () => void): void {
  try {
    fn();
  } catch {
    /* best effort during teardown */
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());
