import { randomBytes } from 'node:crypto';
import * as pkcs11js from 'pkcs11js';
import type { Deadline } from '../deadline';
import { XksError, isXksError } from '../errors';
import type { Logger } from '../log';
import { nextIv } from './iv-source';
import { SessionPool } from './session-pool';
import { classify, ckrName, STANDARD_TAG_FAILURES } from './pkcs11-errors';
import type { CryptoEngine, EkmInfo, GcmResult, HealthReport, PoolStats } from './types';

export type Pkcs11Module = pkcs11js.PKCS11;
type Handle = pkcs11js.Handle;

export interface Pkcs11EngineOptions {
  modulePath: string;
  /** Set in process.env before the module loads (modules read their config location from it). */
  environment?: Record<string, string>;
  tokenLabel: string;
  pin: string;
  sessionPoolSize: number;
  maxQueue: number;
  gcmParams: 'v240' | 'v230';
  healthKeyLabel: string;
  reconnectBackoffMs: number;
  /** false: C_Encrypt/C_Decrypt inline on the event loop (see hsm.asyncCalls). */
  asyncCalls?: boolean;
  vendor?: string;
  logger: Logger;
  /** Creates the module object; tests pass a fault-injecting wrapper around the real one. */
  createModule?: () => Pkcs11Module;
  /** Time spent per HSM operation, session wait included. */
  observe?: (operation: 'encrypt' | 'decrypt' | 'health', seconds: number) => void;
}

/** One PKCS#11 login with its sessions; replaced as a whole after a connection fault. */
interface Connection {
  slot: Handle;
  pool: SessionPool<Handle>;
  keys: Map<string, Handle>;
  healthKey: Handle;
  tagFailures: Set<string>;
  info: EkmInfo;
  inFlight: number;
  dead: boolean;
}

const TAG_BITS = 128;
const IV_BYTES = 12;
const EMPTY = Buffer.alloc(0);

const trim = (s: string): string => s.replace(/\0/g, '').trim();

export class Pkcs11Engine implements CryptoEngine {
  private readonly mod: Pkcs11Module;
  private conn: Connection | null = null;
  private reconnecting: Promise<void> | null = null;
  private closed = false;
  private lastInfo: EkmInfo;
  private readonly log: Logger;

  private constructor(private readonly opts: Pkcs11EngineOptions) {
    this.log = opts.logger;
    Object.assign(process.env, opts.environment);
    this.mod = opts.createModule ? opts.createModule() : new pkcs11js.PKCS11();
    this.mod.load(opts.modulePath);
    this.lastInfo = { vendor: opts.vendor ?? 'unknown', id: opts.tokenLabel, model: 'unknown' };
  }

  /**
   * Loads the module and connects. If the first connection fails the engine still starts (not ready)
   * and keeps retrying, so a proxy started before its HSM comes up by itself.
   */
  static async open(opts: Pkcs11EngineOptions): Promise<Pkcs11Engine> {
    const engine = new Pkcs11Engine(opts);
    try {
      engine.conn = engine.connect();
    } catch (e) {
      engine.log.error({ err: describe(e) }, 'HSM connection failed; retrying in the background');
      engine.scheduleReconnect();
    }
    return engine;
  }

  isConnected(): boolean {
    return this.conn !== null && !this.conn.dead;
  }

  info(): EkmInfo {
    return this.conn?.info ?? this.lastInfo;
  }

  poolStats(): PoolStats {
    return this.conn?.pool.stats() ?? { size: 0, inUse: 0, idle: 0, waiting: 0 };
  }

  private mechanism(iv: Buffer, aad: Buffer): pkcs11js.Mechanism {
    const type = this.opts.gcmParams === 'v240' ? pkcs11js.CK_PARAMS_AES_GCM_v240 : pkcs11js.CK_PARAMS_AES_GCM;
    const parameter = { type, iv, aad, ivBits: iv.length * 8, tagBits: TAG_BITS };
    return { mechanism: pkcs11js.CKM_AES_GCM, parameter };
  }

  private connect(): Connection {
    const m = this.mod;
    try {
      m.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    } catch (e) {
      if (ckrName(e) !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED') throw e;
    }
    const slot = m.C_GetSlotList(true).find((s) => trim(m.C_GetTokenInfo(s).label) === this.opts.tokenLabel);
    if (!slot) throw new Error(`no token labelled "${this.opts.tokenLabel}" is present`);
    const token = m.C_GetTokenInfo(slot);
    const sessions: Handle[] = [];
    for (let i = 0; i < this.opts.sessionPoolSize; i++) {
      sessions.push(m.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION));
    }
    try {
      m.C_Login(sessions[0] as Handle, pkcs11js.CKU_USER, this.opts.pin);
    } catch (e) {
      if (ckrName(e) !== 'CKR_USER_ALREADY_LOGGED_IN') {
        for (const s of sessions) safely(() => m.C_CloseSession(s));
        throw new Error(`HSM login failed: ${ckrName(e) ?? 'error'}`);
      }
    }
    const probe = sessions[0] as Handle;
    const healthKey = this.findKey(probe, this.opts.healthKeyLabel) ?? this.ephemeralHealthKey(probe);
    const info: EkmInfo = {
      vendor: this.opts.vendor ?? trim(token.manufacturerID),
      id: `${trim(token.label)}/${trim(token.serialNumber)}`,
      model: `${trim(token.model)} fw ${token.firmwareVersion.major}.${token.firmwareVersion.minor}`,
    };
    const conn: Connection = {
      slot,
      pool: new SessionPool(sessions, this.opts.maxQueue),
      keys: new Map(),
      healthKey,
      tagFailures: new Set([...STANDARD_TAG_FAILURES, this.calibrateTagFailure(probe, healthKey)]),
      info,
      inFlight: 0,
      dead: false,
    };
    this.lastInfo = info;
    this.log.info({ token: info.id, model: info.model, sessions: sessions.length, tagFailures: [...conn.tagFailures] }, 'HSM connected');
    return conn;
  }

  /** Without a configured health key, a session-only key (gone when the sessions go) still proves the HSM works. */
  private ephemeralHealthKey(session: Handle): Handle {
    this.log.warn({ label: this.opts.healthKeyLabel }, 'health-check key not found; using a session key generated in the HSM');
    return this.mod.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN, parameter: undefined as never }, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
      { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
      { type: pkcs11js.CKA_TOKEN, value: false },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_ENCRYPT, value: true },
      { type: pkcs11js.CKA_DECRYPT, value: true },
    ]);
  }

  /**
   * Modules disagree on what a failed GCM tag check returns (SoftHSM2 says CKR_GENERAL_ERROR).
   * Learn it once with a deliberately corrupted tag so that it maps to InvalidCiphertextException.
   */
  private calibrateTagFailure(session: Handle, key: Handle): string {
    const iv = randomBytes(IV_BYTES);
    const data = randomBytes(16);
    this.mod.C_EncryptInit(session, this.mechanism(iv, EMPTY), key);
    const out = this.mod.C_Encrypt(session, data, Buffer.alloc(data.length + 16));
    (out as Buffer)[out.length - 1] ^= 0x01;
    this.mod.C_DecryptInit(session, this.mechanism(iv, EMPTY), key);
    try {
      this.mod.C_Decrypt(session, out, Buffer.alloc(out.length));
    } catch (e) {
      return ckrName(e) ?? 'CKR_ENCRYPTED_DATA_INVALID';
    }
    throw new Error('HSM accepted a corrupted GCM tag; refusing to use it');
  }

  /** Finds a token AES-256 key by label and refuses keys that could leave the HSM. */
  private findKey(session: Handle, label: string): Handle | undefined {
    const m = this.mod;
    m.C_FindObjectsInit(session, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_LABEL, value: label },
    ]);
    let found: Handle[];
    try {
      found = m.C_FindObjects(session, 2);
    } finally {
      m.C_FindObjectsFinal(session);
    }
    if (found.length === 0) return undefined;
    if (found.length > 1) throw new XksError('InternalException', `more than one HSM key has the label configured for this key`);
    const key = found[0] as Handle;
    const [keyType, valueLen, sensitive, extractable] = m.C_GetAttributeValue(session, key, [
      { type: pkcs11js.CKA_KEY_TYPE },
      { type: pkcs11js.CKA_VALUE_LEN },
      { type: pkcs11js.CKA_SENSITIVE },
      { type: pkcs11js.CKA_EXTRACTABLE },
    ]).map((a) => a.value as Buffer);
    const uint = (b: Buffer | undefined): number => (b ? b.readUIntLE(0, Math.min(b.length, 6)) : -1);
    // 0 = not recorded: SoftHSM2 leaves CKA_VALUE_LEN unset on unwrapped keys (xks-admin checks their length on import).
    if (uint(keyType) !== pkcs11js.CKK_AES || (uint(valueLen) !== 32 && uint(valueLen) !== 0)) {
      throw new XksError('InternalException', 'the HSM key for this external key is not AES-256');
    }
    if (uint(sensitive) !== 1 || uint(extractable) !== 0) {
      throw new XksError('InternalException', 'the HSM key for this external key is extractable or not sensitive; refusing to use it');
    }
    return key;
  }

  private keyHandle(conn: Connection, session: Handle, label: string): Handle {
    const cached = conn.keys.get(label);
    if (cached) return cached;
    const key = this.findKey(session, label);
    if (!key) throw new XksError('KeyNotFoundException', 'the key material for this external key is not in the HSM');
    conn.keys.set(label, key);
    return key;
  }

  private requireConnection(): Connection {
    const conn = this.conn;
    if (!conn || conn.dead) throw new XksError('InternalException', 'the HSM is not connected');
    return conn;
  }

  /** Runs one operation on a pooled session and turns PKCS#11 failures into spec errors. */
  private async run<T>(
    name: 'encrypt' | 'decrypt' | 'health',
    label: string | null,
    deadline: Deadline | undefined,
    op: (session: Handle, key: Handle, conn: Connection) => Promise<T>,
  ): Promise<T> {
    const started = performance.now();
    try {
      return await this.attempt(label, deadline, op, false);
    } finally {
      this.opts.observe?.(name, (performance.now() - started) / 1000);
    }
  }

  private async attempt<T>(
    label: string | null,
    deadline: Deadline | undefined,
    op: (session: Handle, key: Handle, conn: Connection) => Promise<T>,
    retried: boolean,
  ): Promise<T> {
    const conn = this.requireConnection();
    const session = await conn.pool.acquire(deadline && ((cancel) => deadline.onExpire(cancel)));
    conn.inFlight++;
    let handedBack = false;
    try {
      const key = label === null ? conn.healthKey : this.keyHandle(conn, session, label);
      const result = await op(session, key, conn);
      conn.pool.release(session);
      handedBack = true;
      return result;
    } catch (e) {
      if (isXksError(e)) {
        conn.pool.release(session);
        handedBack = true;
        throw e;
      }
      const kind = classify(e);
      if (kind === 'connection') {
        conn.pool.release(null);
        handedBack = true;
        this.connectionLost(conn, e);
        throw new XksError('InternalException', 'the HSM connection was lost; reconnecting');
      }
      conn.pool.release(this.replaceSession(conn, session));
      handedBack = true;
      if (kind === 'handle' && label !== null && !retried) {
        conn.keys.delete(label);
        return this.attempt(label, deadline, op, true);
      }
      this.log.error({ err: describe(e) }, 'HSM operation failed');
      throw new XksError('InternalException', `the HSM operation failed (${ckrName(e) ?? 'error'})`);
    } finally {
      if (!handedBack) conn.pool.release(session);
      conn.inFlight--;
    }
  }

  /** A session that saw an unexpected error may hold an active operation; close it and open a fresh one. */
  private replaceSession(conn: Connection, session: Handle): Handle | null {
    safely(() => this.mod.C_CloseSession(session));
    try {
      return this.mod.C_OpenSession(conn.slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    } catch (e) {
      this.connectionLost(conn, e);
      return null;
    }
  }

  private callAsync(fn: (cb: (error: Error | null, data: Buffer) => void) => void): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      fn((error, data) => (error ? reject(error) : resolve(data)));
    });
  }

  encrypt(label: string, plaintext: Buffer, aad: Buffer, deadline?: Deadline): Promise<GcmResult> {
    return this.run('encrypt', label, deadline, (session, key) => this.gcmEncrypt(session, key, plaintext, aad));
  }

  private async gcmEncrypt(session: Handle, key: Handle, plaintext: Buffer, aad: Buffer): Promise<GcmResult> {
    const iv = nextIv();
    this.mod.C_EncryptInit(session, this.mechanism(iv, aad), key);
    const out = Buffer.allocUnsafe(plaintext.length + TAG_BITS / 8);
    // Single-part C_Encrypt rejects empty input on some modules; the final call alone yields the tag.
    const sealed =
      this.opts.asyncCalls === false
        ? plaintext.length === 0
          ? this.mod.C_EncryptFinal(session, out)
          : this.mod.C_Encrypt(session, plaintext, out)
        : plaintext.length === 0
          ? await this.callAsync((cb) => this.mod.C_EncryptFinal(session, out, cb))
          : await this.callAsync((cb) => this.mod.C_Encrypt(session, plaintext, out, cb));
    if (sealed.length !== out.length) throw new XksError('InternalException', 'the HSM returned an output of unexpected length');
    return { iv, ciphertext: sealed.subarray(0, plaintext.length), tag: sealed.subarray(plaintext.length) };
  }

  decrypt(label: string, iv: Buffer, aad: Buffer, ciphertext: Buffer, tag: Buffer, deadline?: Deadline): Promise<Buffer> {
    return this.run('decrypt', label, deadline, (session, key, conn) => this.gcmDecrypt(session, key, conn, iv, aad, ciphertext, tag));
  }

  private async gcmDecrypt(session: Handle, key: Handle, conn: Connection, iv: Buffer, aad: Buffer, ciphertext: Buffer, tag: Buffer): Promise<Buffer> {
    this.mod.C_DecryptInit(session, this.mechanism(iv, aad), key);
    const input = Buffer.concat([ciphertext, tag]);
    try {
      const out = Buffer.allocUnsafe(input.length);
      const plain =
        this.opts.asyncCalls === false
          ? this.mod.C_Decrypt(session, input, out)
          : await this.callAsync((cb) => this.mod.C_Decrypt(session, input, out, cb));
      if (plain.length !== ciphertext.length) throw new XksError('InternalException', 'the HSM returned an output of unexpected length');
      return plain;
    } catch (e) {
      const name = ckrName(e);
      if (name && conn.tagFailures.has(name)) {
        throw new XksError('InvalidCiphertextException', 'the ciphertext, IV, AAD, ciphertextMetadata or authentication tag is invalid');
      }
      throw e;
    }
  }

  async healthCheck(deadline?: Deadline): Promise<HealthReport> {
    const started = Date.now();
    try {
      await this.run('health', null, deadline, async (session, key, conn) => {
        const probe = randomBytes(32);
        const sealed = await this.gcmEncrypt(session, key, probe, EMPTY);
        const opened = await this.gcmDecrypt(session, key, conn, sealed.iv, EMPTY, sealed.ciphertext, sealed.tag);
        if (!opened.equals(probe)) throw new XksError('InternalException', 'health-check round trip returned different data');
      });
      return { status: 'ACTIVE', checkedAt: Date.now(), latencyMs: Date.now() - started };
    } catch (e) {
      return { status: 'UNAVAILABLE', checkedAt: Date.now(), latencyMs: Date.now() - started, detail: isXksError(e) ? e.message : 'health check failed' };
    }
  }

  private connectionLost(conn: Connection, cause: unknown): void {
    if (conn.dead) return;
    conn.dead = true;
    this.log.error({ err: describe(cause) }, 'HSM connection lost; reconnecting');
    this.scheduleReconnect(conn);
  }

  private scheduleReconnect(old?: Connection): void {
    if (this.reconnecting || this.closed) return;
    this.reconnecting = (async () => {
      if (old) await this.teardown(old);
      let backoff = this.opts.reconnectBackoffMs;
      while (!this.closed) {
        try {
          safely(() => this.mod.C_Finalize());
          this.conn = this.connect();
          return;
        } catch (e) {
          this.log.warn({ err: describe(e), retryInMs: backoff }, 'HSM reconnect failed');
          await sleep(backoff);
          backoff = Math.min(backoff * 2, 5_000);
        }
      }
    })().finally(() => {
      this.reconnecting = null;
    });
  }

  /** Closes a connection's sessions once its in-flight calls are back (finalizing under a running call can crash a module). */
  private async teardown(conn: Connection): Promise<void> {
    conn.dead = true;
    const idle = conn.pool.drain(new XksError('InternalException', 'the HSM connection was reset'));
    for (let waited = 0; conn.inFlight > 0 && waited < 5000; waited += 20) await sleep(20);
    for (const s of idle) safely(() => this.mod.C_CloseSession(s));
    safely(() => this.mod.C_CloseAllSessions(conn.slot));
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.reconnecting?.catch(() => undefined);
    if (this.conn) await this.teardown(this.conn);
    this.conn = null;
    safely(() => this.mod.C_Finalize());
  }
}

function safely(fn: () => void): void {
  try {
    fn();
  } catch {
    /* best effort during teardown */
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

/** Error summary for logs: the PKCS#11 return value or message, never data. */
function describe(e: unknown): string {
  return ckrName(e) ?? (e instanceof Error ? e.message : String(e));
}
