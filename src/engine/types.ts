import type { Deadline } from '../deadline';

/**
 * What the XKS handlers need from a key manager. Implementations throw EngineError (src/engine/errors.ts);
 * src/xks/engine-errors.ts decides what KMS is told. Deadline expiry stays the Deadline's own error.
 */
export interface GcmResult {
  iv: Buffer;
  ciphertext: Buffer;
  tag: Buffer;
}

export type EkmHealth = 'ACTIVE' | 'DEGRADED' | 'UNAVAILABLE';

export interface EkmInfo {
  vendor: string;
  id: string;
  model: string;
}

export interface HealthReport {
  status: EkmHealth;
  checkedAt: number;
  latencyMs: number;
  detail?: string;
  timedOut?: boolean;
  /** A fleet's members, each with its own state (GetHealthStatus ekmFleetDetails); absent for a fleet of one, which answers as its HSM. */
  members?: readonly MemberHealth[];
}

/** One HSM of a fleet in a health answer, by its configured id. */
export interface MemberHealth {
  id: string;
  model: string;
  healthStatus: EkmHealth;
  detail?: string;
}

/**
 * One member's deep check as the fleet ran it, within its time budget, with what the fleet knows of the
 * member; src/health/state.ts turns it into the member's state.
 */
export interface MemberCheck {
  id: string;
  model: string;
  /** Taken out by the fleet's circuit breaker: no check was run (the breaker's probe runs its own). */
  breakerOpen: boolean;
  /** The engine's result; UNAVAILABLE with timedOut when the budget ran out first. Absent when the breaker is open. */
  report?: HealthReport;
  /** Configured key versions this HSM should hold but does not. */
  missing: number;
}

export interface PoolStats {
  size: number;
  inUse: number;
  idle: number;
  waiting: number;
}

/** Connection state for readiness: misconfigured is permanent until an operator acts; reason names the PKCS#11 call and return value. */
export interface EngineStatus {
  state: 'connected' | 'disconnected' | 'misconfigured';
  reason?: string;
}

/** What the XKS operations need of the key manager: the fleet (src/engine/fleet.ts), whatever its size. */
export interface CryptoEngine {
  /** AES-256-GCM encrypt with a fresh 96-bit IV under the key with this HSM label. */
  encrypt(label: string, plaintext: Buffer, aad: Buffer, deadline?: Deadline): Promise<GcmResult>;
  /** AES-256-GCM decrypt; an authentication failure is EngineError 'tag-mismatch'. */
  decrypt(label: string, iv: Buffer, aad: Buffer, ciphertext: Buffer, tag: Buffer, deadline?: Deadline): Promise<Buffer>;
  /**
   * Confirms the key with this HSM label is still on the token: key-not-found when its object is gone
   * (a cached handle is re-checked with one attribute read, not a search), unavailable when the HSM is.
   */
  checkKey(label: string, deadline?: Deadline): Promise<void>;
  info(): EkmInfo;
  poolStats(): PoolStats;
  isConnected(): boolean;
  status(): EngineStatus;
  close(): Promise<void>;
}

/** One HSM's engine, as a fleet holds it (src/engine/pkcs11-engine.ts). */
export interface HsmEngine extends CryptoEngine {
  /** A real encrypt and decrypt on the health-check key; the caller bounds its time (src/engine/fleet.ts). */
  healthCheck(deadline?: Deadline): Promise<HealthReport>;
  /** Round trips on every session of a fresh connection before the port opens. */
  warmUp(rounds: number): Promise<void>;
}
