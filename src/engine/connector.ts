import { ControlThread } from './control-thread';
import { EngineError } from './errors';
import type { Gcm, IvSource } from './gcm';
import { ConnectionDeps, HsmConnection, Misconfiguration } from './connection';
import type { HsmConfig, ModuleLease, Pkcs11Module } from './module';
import { classify, describeFailure, isMisconfiguration } from './pkcs11-errors';
import type { EkmInfo, EngineStatus } from './types';

const TRANSIENT_BACKOFF_CAP_MS = 5_000;
/** Connects started over at once after a session fault (see open). */
const CONNECT_TRIES = 4;
/** Misconfiguration is retried (the operator may fix the HSM side without restarting us), but slowly. */
const MISCONFIGURED_BACKOFF_CAP_MS = 30_000;

/**
 * Owns the loaded module and its current connection: connects, notices loss, reconnects with backoff,
 * and says which state it is in (misconfigured = a permanent failure, with the call and return value).
 * Connecting runs on a control thread of its own (src/engine/control-thread.ts): while one HSM logs in for
 * seconds, the event loop serves probes, health answers and the other HSMs of a fleet.
 */
export class Connector {
  private conn: HsmConnection | null = null;
  private reconnecting: Promise<void> | null = null;
  private closed = false;
  private state: EngineStatus = { state: 'disconnected', reason: 'not connected yet' };
  private lastInfo: EkmInfo;
  private wake: (() => void) | undefined;
  /** What the last connection learned: the next one tries it first. */
  private learnedIv: IvSource | undefined;

  private readonly mod: Pkcs11Module;
  private readonly control: ControlThread;

  constructor(
    private readonly lease: ModuleLease,
    private readonly hsm: HsmConfig,
    private readonly deps: ConnectionDeps,
    private readonly gcm: Gcm,
  ) {
    this.mod = lease.mod;
    this.control = new ControlThread(hsm.modulePath, lease.mod, () =>
      deps.logger.warn(
        { module: hsm.modulePath },
        "this PKCS#11 module gives each loader an instance of its own, so its logins and sessions cannot be made on a thread: they run on the event loop",
      ),
    );
    this.lastInfo = { vendor: hsm.vendor ?? 'unknown', id: hsm.tokenLabel, model: 'unknown' };
  }

  /**
   * Connects (resolves once the first attempt is over); if that fails the engine still starts (not ready)
   * and keeps retrying, so a proxy started before its HSM comes up by itself.
   */
  async start(): Promise<void> {
    try {
      this.lease.inUse = true;
      this.connected(await this.open());
    } catch {
      this.lease.inUse = false;
      // Retried at once (a passing glitch), and that attempt's failure is what gets logged and reported.
      await this.scheduleReconnect();
    }
  }

  /**
   * One connect attempt. A session the module invalidated meanwhile (an HA group losing the member that
   * held it, during the probe) is no reason to back off: the connect starts over at once, a few times.
   */
  private async open(): Promise<HsmConnection> {
    for (let tries = 1; ; tries++) {
      try {
        return await HsmConnection.open(this.mod, this.control, this.hsm, this.deps, this.gcm, this.learnedIv);
      } catch (e) {
        if (classify(e) !== 'session' || tries >= CONNECT_TRIES) throw e;
      }
    }
  }

  /** The live connection, or unavailable. */
  current(): HsmConnection {
    const conn = this.conn;
    if (!conn || conn.dead) {
      throw new EngineError('unavailable', this.state.state === 'misconfigured' ? 'the HSM is misconfigured' : 'the HSM is not connected');
    }
    return conn;
  }

  isConnected(): boolean {
    return this.conn !== null && !this.conn.dead;
  }

  status(): EngineStatus {
    return this.state;
  }

  info(): EkmInfo {
    return this.conn?.info ?? this.lastInfo;
  }

  lost(conn: HsmConnection, cause: unknown): void {
    if (conn.dead) return;
    conn.dead = true;
    this.deps.logger.error({ err: describeFailure(cause) }, 'HSM connection lost; reconnecting');
    this.setState({ state: 'disconnected', reason: describeFailure(cause) });
    void this.scheduleReconnect(conn);
  }

  private connected(conn: HsmConnection): void {
    this.conn = conn;
    this.lease.inUse = true;
    this.lastInfo = conn.info;
    this.learnedIv = conn.gcm.ivSource;
    this.deps.logger.info(
      {
        token: conn.info.id,
        model: conn.info.model,
        sessions: conn.pool.size,
        ivSource: conn.gcm.ivSource,
        tagFailures: [...conn.gcm.tagFailures],
        emptyPlaintext: conn.gcm.emptyPlaintext,
      },
      'HSM connected',
    );
    this.setState({ state: 'connected' });
  }

  /** Records a failed attempt and returns the delay before the next one. */
  private failed(e: unknown, backoff: number): number {
    const reason = describeFailure(e);
    if (e instanceof Misconfiguration || isMisconfiguration(e)) {
      const retryInMs = Math.min(backoff, MISCONFIGURED_BACKOFF_CAP_MS);
      this.deps.logger.error({ reason, retryInMs }, 'HSM misconfigured: the proxy stays not ready until this is fixed');
      this.setState({ state: 'misconfigured', reason });
      return retryInMs;
    }
    const retryInMs = Math.min(backoff, TRANSIENT_BACKOFF_CAP_MS);
    this.deps.logger.warn({ err: reason, retryInMs }, 'HSM connection failed; retrying');
    this.setState({ state: 'disconnected', reason });
    return retryInMs;
  }

  private setState(next: EngineStatus): void {
    const changed = next.state !== this.state.state || next.reason !== this.state.reason;
    this.state = next;
    if (changed) this.deps.events?.publish('hsm.state', { hsm: this.deps.hsmId ?? this.hsm.tokenLabel, ...next });
  }

  /** The first attempt is immediate (a lost connection, or a first connect that met a passing glitch); resolves once it is over. */
  private scheduleReconnect(old?: HsmConnection): Promise<void> {
    if (this.reconnecting || this.closed) return Promise.resolve();
    let attempted: () => void = () => undefined;
    const firstAttempt = new Promise<void>((resolve) => (attempted = resolve));
    this.reconnecting = (async () => {
      if (old) await old.teardown();
      // Only now, with no call of ours left in the module, may another user of the library finalize it.
      this.lease.inUse = false;
      let backoff = this.hsm.reconnectBackoffMs;
      let delay = 0;
      while (!this.closed) {
        if (delay > 0) await this.pause(delay);
        if (this.closed) return;
        try {
          // Our sessions are already closed (teardown); the module is re-initialised only if nobody else uses
          // it (a network module whose members were all lost recovers only through C_Finalize + C_Initialize).
          if (this.lease.alone()) await this.control.call('C_Finalize').catch(() => undefined);
          this.lease.inUse = true;
          const conn = await this.open();
          if (this.closed) {
            await conn.teardown();
            return;
          }
          this.connected(conn);
          return;
        } catch (e) {
          this.lease.inUse = false;
          backoff *= 2;
          delay = this.failed(e, backoff);
        }
        attempted();
      }
    })().finally(() => {
      attempted();
      this.reconnecting = null;
    });
    return firstAttempt;
  }

  /** A sleep that close() cuts short (the misconfigured backoff reaches 30 s). */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      timer.unref();
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.wake?.();
    await this.reconnecting?.catch(() => undefined);
    if (this.conn) await this.conn.teardown();
    this.conn = null;
    if (this.lease.detach()) await this.control.call('C_Finalize').catch(() => undefined);
    await this.control.close();
  }
}
