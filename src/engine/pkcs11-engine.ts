import { randomBytes } from 'node:crypto';
import * as pkcs11js from 'pkcs11js';
import type { Deadline } from '../deadline';
import type { ConnectionDeps, HsmConnection } from './connection';
import type { SessionPool } from './session-pool';
import { Connector } from './connector';
import { EngineError, isEngineError } from './errors';
import { Gcm } from './gcm';
import { HsmConfig, leaseModule } from './module';
import { ckrName, classify, describeFailure } from './pkcs11-errors';
import type { EkmInfo, EngineStatus, GcmResult, HealthReport, HsmEngine, PoolStats } from './types';

export type { Pkcs11Module } from './module';
type Handle = pkcs11js.Handle;
type OperationName = 'encrypt' | 'decrypt' | 'health' | 'check';
/** An operation on a session: a value when the module was called inline, a promise on libuv's pool. */
type Op<T> = (session: Handle, key: Handle, conn: HsmConnection) => T | Promise<T>;
/** Which sessions an operation uses: the customer pool, or the health check's reserved one. */
type Lane = (conn: HsmConnection) => SessionPool<Handle>;
const CUSTOMER: Lane = (conn) => conn.pool;
const HEALTH: Lane = (conn) => conn.healthLane;

/** What the engine needs besides its hsm section; time per operation goes out as the hsm.operation event. */
export type EngineDeps = ConnectionDeps;

const EMPTY = Buffer.alloc(0);
/** Sessions an HA group may invalidate in a row under one operation before it fails. */
const SESSION_RETRIES = 3;

/**
 * The CryptoEngine on a PKCS#11 module: a Connector (load, login, reconnect), per-connection key lookup,
 * and AES-GCM calls, composed here with the error policy: what a PKCS#11 failure means for the session,
 * the connection and the caller.
 */
export class Pkcs11Engine implements HsmEngine {
  private readonly connector: Connector;
  private readonly gcm: Gcm;
  /** Labels whose presence on the token was last confirmed at (performance.now()): see hsm.keyCheckCacheMs. */
  private readonly confirmed = new Map<string, number>();

  private constructor(
    private readonly hsm: HsmConfig,
    private readonly deps: EngineDeps,
  ) {
    const lease = leaseModule(hsm, deps.createModule);
    this.gcm = new Gcm(lease.mod, hsm.gcmParams, hsm.asyncCalls);
    this.connector = new Connector(lease, hsm, deps, this.gcm);
  }

  /** Loads the module and connects; a failed first connection leaves the engine running, not ready, and retrying. */
  static async open(hsm: HsmConfig, deps: EngineDeps): Promise<Pkcs11Engine> {
    const engine = new Pkcs11Engine(hsm, deps);
    await engine.connector.start();
    return engine;
  }

  isConnected(): boolean {
    return this.connector.isConnected();
  }

  status(): EngineStatus {
    return this.connector.status();
  }

  info(): EkmInfo {
    return this.connector.info();
  }

  poolStats(): PoolStats {
    return this.connector.isConnected() ? this.connector.current().pool.stats() : { size: 0, inUse: 0, idle: 0, waiting: 0 };
  }

  encrypt(label: string, plaintext: Buffer, aad: Buffer, deadline?: Deadline): Promise<GcmResult> {
    // Counted per key version for rotation by usage: one random IV per encryption, whoever draws it (the
    // proxy or the HSM), so NIST SP 800-38D's 2^32 encryptions per key (README "Ciphertext format").
    const counted = (sealed: GcmResult): GcmResult => {
      this.deps.events?.publish('key.encrypted', { label });
      return sealed;
    };
    return this.run('encrypt', CUSTOMER, label, deadline, (session, key, conn) => {
      const sealed = this.gcm.encrypt(session, key, plaintext, aad, conn.gcm);
      return sealed instanceof Promise ? sealed.then(counted) : counted(sealed);
    });
  }

  decrypt(label: string, iv: Buffer, aad: Buffer, ciphertext: Buffer, tag: Buffer, deadline?: Deadline): Promise<Buffer> {
    return this.run('decrypt', CUSTOMER, label, deadline, (session, key, conn) => this.gcm.decrypt(session, key, iv, aad, ciphertext, tag, conn.gcm));
  }

  async checkKey(label: string, deadline?: Deadline): Promise<void> {
    const at = this.confirmed.get(label);
    if (at !== undefined && performance.now() - at < this.hsm.keyCheckCacheMs && this.isConnected()) return;
    this.confirmed.delete(label);
    await this.run('check', CUSTOMER, label, deadline, async (session, key, conn) => conn.keys.confirm(session, key));
    // Bounded by the labels in the configuration.
    this.confirmed.set(label, performance.now());
  }

  /** On the reserved session: customer traffic queueing for the pool does not delay it. */
  async healthCheck(deadline?: Deadline): Promise<HealthReport> {
    const started = Date.now();
    try {
      await this.run('health', HEALTH, null, deadline, this.roundTrip);
      return { status: 'ACTIVE', checkedAt: Date.now(), latencyMs: Date.now() - started };
    } catch (e) {
      return { status: 'UNAVAILABLE', checkedAt: Date.now(), latencyMs: Date.now() - started, detail: isEngineError(e) ? e.message : 'health check failed' };
    }
  }

  /**
   * Warm-up of a fresh connection: `rounds` encrypt/decrypt round trips on the health key through the
   * customer pool, all sessions at once, so that the first customer requests meet compiled code and
   * sessions that have each done work (and the pool's hold-time estimate has real samples). Failures
   * are left to the health check to report.
   */
  async warmUp(rounds: number): Promise<void> {
    if (!this.isConnected()) return;
    const lanes = Math.max(1, this.connector.current().pool.size);
    const lane = async (): Promise<void> => {
      for (let i = 0; i < Math.ceil(rounds / lanes); i++) await this.attempt(CUSTOMER, null, undefined, this.roundTrip);
    };
    await Promise.all(Array.from({ length: lanes }, lane)).catch(() => undefined);
  }

  private readonly roundTrip: Op<void> = async (session, key, conn) => {
    const probe = randomBytes(32);
    const sealed = await this.gcm.encrypt(session, key, probe, EMPTY, conn.gcm);
    const opened = await this.gcm.decrypt(session, key, sealed.iv, EMPTY, sealed.ciphertext, sealed.tag, conn.gcm);
    if (!opened.equals(probe)) throw new EngineError('device', 'health-check round trip returned different data');
  };

  close(): Promise<void> {
    return this.connector.close();
  }

  /** One operation, timed for the hsm.operation event. Served inline, it settles without a promise hop in between. */
  private run<T>(name: OperationName, lane: Lane, label: string | null, deadline: Deadline | undefined, op: Op<T>): Promise<T> {
    const started = performance.now();
    let result: T | Promise<T>;
    try {
      result = this.attempt(lane, label, deadline, op);
    } catch (e) {
      this.timed(name, started, false);
      return Promise.reject(e);
    }
    if (!(result instanceof Promise)) {
      this.timed(name, started, true);
      return Promise.resolve(result);
    }
    return result.then(
      (value) => {
        this.timed(name, started, true);
        return value;
      },
      (e: unknown) => {
        this.timed(name, started, false);
        throw e;
      },
    );
  }

  private timed(operation: OperationName, started: number, ok: boolean): void {
    const seconds = (performance.now() - started) / 1000;
    this.deps.events?.publish('hsm.operation', { hsm: this.deps.hsmId ?? this.hsm.tokenLabel, operation, seconds, ok });
  }

  /**
   * One operation on a pooled session. Engine errors (unknown key, bad tag) leave the session healthy;
   * a connection fault reconnects everything; a session the module invalidated (an HA group losing a
   * member) and a stale key handle are retried once, on a fresh session or after a new lookup; any other
   * PKCS#11 failure replaces the session, which may still hold an active operation.
   */
  private attempt<T>(lane: Lane, label: string | null, deadline: Deadline | undefined, op: Op<T>, tries = 0): T | Promise<T> {
    const conn = this.connector.current();
    const pool = lane(conn);
    // The deadline decides admission (will the wait fit in it?) and drops a caller whose budget is
    // spent before a session frees: no HSM call is ever made for a request that has already failed.
    // An idle session is taken at once; only a wait for one is a promise.
    const idle = pool.takeIdle(deadline);
    if (idle !== undefined) return this.attemptOn(conn, pool, idle, lane, label, deadline, op, tries);
    return pool.acquire(deadline).then((session) => this.attemptOn(conn, pool, session, lane, label, deadline, op, tries));
  }

  private attemptOn<T>(conn: HsmConnection, pool: SessionPool<Handle>, session: Handle, lane: Lane, label: string | null, deadline: Deadline | undefined, op: Op<T>, tries: number): T | Promise<T> {
    let result: T | Promise<T>;
    try {
      // Torn down while this caller waited for its turn: the session is being closed.
      if (conn.dead) throw new EngineError('unavailable', 'the HSM connection was reset');
      result = op(session, label === null ? conn.healthKey : conn.keys.handle(session, label), conn);
    } catch (e) {
      return this.recover(conn, pool, session, e, lane, label, deadline, op, tries);
    }
    if (result instanceof Promise) {
      return result.then(
        (value) => {
          pool.release(session);
          return value;
        },
        (e: unknown) => this.recover(conn, pool, session, e, lane, label, deadline, op, tries),
      );
    }
    pool.release(session);
    return result;
  }

  /** A failed operation: the session goes back (or is replaced), then the error is thrown or the operation retried. */
  private async recover<T>(conn: HsmConnection, pool: SessionPool<Handle>, session: Handle, e: unknown, lane: Lane, label: string | null, deadline: Deadline | undefined, op: Op<T>, tries: number): Promise<T> {
    let handBack: Handle | null = session;
    try {
      if (isEngineError(e)) throw e;
      const fault = classify(e);
      if (fault === 'connection') {
        handBack = null;
        this.connector.lost(conn, e);
        throw new EngineError('unavailable', 'the HSM connection was lost; reconnecting');
      }
      // Replaced before the session goes back, so the pool keeps its size and its waiters their turn.
      handBack = await conn.replaceSession(session);
      if (handBack === null) {
        this.connector.lost(conn, e);
        if (fault === 'session') throw new EngineError('unavailable', 'the HSM connection was lost; reconnecting');
      }
      const again = fault === 'session' ? tries < SESSION_RETRIES : fault === 'handle' && label !== null && tries === 0;
      if (!again || handBack === null) {
        this.deps.logger.error({ err: describeFailure(e) }, 'HSM operation failed');
        throw new EngineError('device', `the HSM operation failed (${ckrName(e) ?? 'error'})`);
      }
      if (fault === 'handle' && label !== null) conn.keys.forget(label);
    } finally {
      pool.release(session, handBack);
    }
    return this.attempt(lane, label, deadline, op, tries + 1);
  }
}
