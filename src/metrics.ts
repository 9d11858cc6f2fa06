import client from 'prom-client';
import type { PoolStats } from './engine/types';
import { RETRYABLE_ERRORS, XKS_ERROR_STATUS, XksErrorName } from './errors';
import type { ProxyEvents } from './events';
import { pinnedRoots, REFUSAL_REASONS } from './governance/quorum';
import type { AuthFailureKind } from './sigv4/verify';
import type { Operation } from './xks/operations';

// The label values an alert or a dashboard reads, each series created at 0 before its first event: a
// counter that appears with its first increment has no earlier sample, so increase() and rate() miss that
// increment, and an alert meant to fire on the first failure stays silent (Prometheus counts from the
// second sample of a series).
const OPERATIONS: Record<Operation, true> = { GetHealthStatus: true, GetKeyMetadata: true, Encrypt: true, Decrypt: true };
const AUTH_FAILURES: Record<AuthFailureKind, true> = { malformed: true, scope: true, clock_skew: true, signed_headers: true, unknown_access_key: true, body_hash: true, signature: true };
const SHED_REASONS = ['hsm_wait', 'event_loop'] as const;
const ABORT_STAGES = ['body', 'answer'] as const;
const RELOAD_RESULTS = ['success', 'failure', 'restart_required'] as const;

/** State read when Prometheus scrapes (see attach). */
export interface MetricsState {
  pool(): Pick<PoolStats, 'inUse' | 'idle' | 'waiting'>;
  /** The same per HSM (ids from config, so a bounded label set); when given, xks_hsm_sessions is per HSM. */
  hsmPools?(): readonly { id: string; pool: Pick<PoolStats, 'inUse' | 'idle' | 'waiting'> }[];
  /** The HSM connection's state now. */
  hsm?(): 'connected' | 'disconnected' | 'misconfigured';
  /** The credentials of the configuration in force. */
  credentials(): readonly { keyStore: string; createdAt?: string }[];
  /** Key store names and HSM ids of the configuration in force: their series start at 0. */
  known?(): { keyStores: readonly string[]; hsmIds: readonly string[] };
  /** The read gate's connections (src/http/read-gate.ts): read, and paused while the event loop is behind. */
  gate?(): { reading: number; paused: number; idle: number };
  /** What of the quorum-protected groups the configuration in force leaves outside the quorum (src/governance/coverage.ts). */
  protectionGaps?(): { uncheckedKeyVersions: readonly unknown[]; unrecordedKeyStores: readonly unknown[] };
}

/**
 * Prometheus metrics. Labels are bounded sets (key store names from config, operation and error
 * names from the spec): never a key id, principal, request id or anything derived from a body.
 *
 * Events feed them (attach): the engine, health monitor, config reloader and listener publish on the
 * proxy's bus; request metrics come from the request pipeline's response listener (observeRequest).
 *
 * In cluster mode the primary merges the workers' registries (prom-client AggregatorRegistry); each
 * metric's `aggregator` says how: counters and histograms sum (the default), so do the session pool
 * gauges (sessions of all workers); health takes the max (any worker's state shows), credential age
 * the max (the oldest), certificate expiry the min (the soonest).
 */
export class Metrics {
  readonly registry = new client.Registry();
  readonly requests = new client.Counter({
    name: 'xks_requests_total',
    help: 'XKS API requests by key store, operation and outcome (errorName "none" on success)',
    labelNames: ['key_store', 'operation', 'error_name', 'retryable'] as const,
    registers: [this.registry],
  });
  readonly requestSeconds = new client.Histogram({
    name: 'xks_request_duration_seconds',
    help: 'Whole-request latency as seen by the proxy (KMS alarms at 200 ms; its timeout is 250 ms)',
    labelNames: ['key_store', 'operation'] as const,
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1],
    registers: [this.registry],
  });
  readonly authFailures = new client.Counter({
    name: 'xks_auth_failures_total',
    help: 'Requests refused by SigV4 authentication, by key store and reason (malformed, scope, clock_skew, signed_headers, unknown_access_key, body_hash, signature)',
    labelNames: ['key_store', 'reason'] as const,
    registers: [this.registry],
  });
  // Kept out of xks_requests_total: a client leaving is not an error of the proxy, and counting it there
  // would fire the error alerts (and its stall the latency ones) on client behaviour.
  readonly clientAborts = new client.Counter({
    name: 'xks_client_aborts_total',
    help: 'Requests whose client closed the connection before the answer: stage "body" while sending it (never processed), "answer" after (processed, answer undelivered)',
    labelNames: ['key_store', 'stage'] as const,
    registers: [this.registry],
  });
  readonly hsmSeconds = new client.Histogram({
    name: 'xks_hsm_operation_duration_seconds',
    help: 'Time spent in the HSM (including waiting for a session) per operation and HSM (hsms[].id)',
    labelNames: ['operation', 'hsm_id'] as const,
    buckets: [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });
  readonly hsmErrors = new client.Counter({
    name: 'xks_hsm_errors_total',
    help: 'HSM operations that failed, per operation and HSM (hsms[].id); a fleet retries some on another HSM',
    labelNames: ['operation', 'hsm_id'] as const,
    registers: [this.registry],
  });
  // The series without hsm_id is the proxy's answer (the fleet's state); those with hsm_id are each HSM's own.
  readonly ekmHealth = new client.Gauge({
    name: 'xks_ekm_health_status',
    help: 'Last deep health check result: 1 for the current state (ACTIVE, DEGRADED, UNAVAILABLE), 0 otherwise; per HSM with hsm_id',
    labelNames: ['state', 'hsm_id'] as const,
    aggregator: 'max',
    registers: [this.registry],
  });
  // Pool occupancy and credential age are state, not events: reading them at scrape time is exact and
  // costs nothing per request, where an event per session checkout would cost on the hot path.
  private state: MetricsState | undefined;
  readonly pool = new client.Gauge({
    name: 'xks_hsm_sessions',
    help: 'HSM session pool: sessions in use, idle, and requests waiting for one (per HSM with hsm_id)',
    labelNames: ['state', 'hsm_id'] as const,
    registers: [this.registry],
    collect: () => {
      const perHsm = this.state?.hsmPools?.();
      if (perHsm) {
        for (const { id, pool } of perHsm) {
          this.pool.set({ state: 'in_use', hsm_id: id }, pool.inUse);
          this.pool.set({ state: 'idle', hsm_id: id }, pool.idle);
          this.pool.set({ state: 'waiting', hsm_id: id }, pool.waiting);
        }
        return;
      }
      const s = this.state?.pool();
      if (!s) return;
      this.pool.set({ state: 'in_use' }, s.inUse);
      this.pool.set({ state: 'idle' }, s.idle);
      this.pool.set({ state: 'waiting' }, s.waiting);
    },
  });
  readonly connections = new client.Gauge({
    name: 'xks_connections',
    help: 'XKS connections that have sent a request, by state: read, paused (not read while the event loop is behind; their requests wait in the socket buffer), or idle (no request for a while; counted only while the read gate is engaged)',
    labelNames: ['state'] as const,
    registers: [this.registry],
    collect: () => {
      const g = this.state?.gate?.();
      if (!g) return;
      this.connections.set({ state: 'read' }, g.reading);
      this.connections.set({ state: 'paused' }, g.paused);
      this.connections.set({ state: 'idle' }, g.idle);
    },
  });
  readonly credentialAge = new client.Gauge({
    name: 'xks_sigv4_credential_age_days',
    help: 'Age of the oldest live SigV4 credential per key store, from its createdAt (KMS publishes XksProxyCredentialAge)',
    labelNames: ['key_store'] as const,
    aggregator: 'max',
    registers: [this.registry],
    collect: () => {
      this.credentialAge.reset();
      const oldest = new Map<string, number>();
      for (const c of this.state?.credentials() ?? []) {
        const t = c.createdAt ? Date.parse(c.createdAt) : NaN;
        if (!Number.isNaN(t)) oldest.set(c.keyStore, Math.min(oldest.get(c.keyStore) ?? t, t));
      }
      for (const [keyStore, t] of oldest) this.credentialAge.set({ key_store: keyStore }, (Date.now() - t) / 86_400_000);
    },
  });
  readonly configReloads = new client.Counter({
    name: 'xks_config_reloads_total',
    help: 'Configuration reloads by result: success, failure (invalid file, kept the previous one), restart_required (changes settings read only at start, refused whole); one per file content',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly restartPending = new client.Gauge({
    name: 'xks_config_restart_pending',
    help: '1 while the config file changes settings read only at start (refused until a restart; the log names them), 0 once a reload applied the file',
    aggregator: 'max',
    registers: [this.registry],
  });
  readonly shed = new client.Counter({
    name: 'xks_shed_total',
    help: 'Requests refused with 429 because the proxy is overloaded: hsm_wait (no HSM session within the deadline), event_loop (standing event-loop delay)',
    labelNames: ['key_store', 'reason'] as const,
    registers: [this.registry],
  });
  readonly hsmState = new client.Gauge({
    name: 'xks_hsm_state',
    help: 'HSM connection state: 1 for the current one (connected, disconnected, misconfigured), 0 otherwise; misconfigured needs an operator (the log names the PKCS#11 call and return value)',
    labelNames: ['state'] as const,
    aggregator: 'max',
    registers: [this.registry],
    collect: () => {
      const now = this.state?.hsm?.();
      if (!now) return;
      for (const s of ['connected', 'disconnected', 'misconfigured']) this.hsmState.set({ state: s }, now === s ? 1 : 0);
    },
  });
  private readonly breakerSeen = new Set<string>();
  readonly breakerOpen = new client.Gauge({
    name: 'xks_hsm_breaker_open',
    help: "1 while the fleet's circuit breaker has this HSM out (taken out after repeated failures, probed until it answers), 0 once it is back",
    labelNames: ['hsm_id'] as const,
    registers: [this.registry],
  });
  readonly connectionsDropped = new client.Counter({
    name: 'xks_connections_dropped_total',
    help: 'Connections closed on arrival because server.maxConnections were already open',
    registers: [this.registry],
  });
  readonly connectionsClosedStale = new client.Counter({
    name: 'xks_connections_closed_stale_total',
    help: 'Connections the read gate kept paused past the stale limit and closed because the open connections neared server.maxConnections (their clients had stopped waiting)',
    registers: [this.registry],
  });
  readonly mtlsRefusals = new client.Counter({
    name: 'xks_mtls_refusals_total',
    help: 'Client certificates refused by mTLS (each got a handshake_failure alert), by reason: no_certificate, expired, not_yet_valid, self_signed, unknown_ca, revoked, wrong_purpose, invalid_certificate, subject_not_allowed',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly governanceRefusals = new client.Counter({
    name: 'xks_governance_refusals_total',
    help: 'Configs refused by governance, by reason: quorum (approvals missing), trust-root (root not pinned), rollback (older than the newest accepted state), expired (approvals past their TTL), high-water (the HSMs could not confirm or record the newest state), key-owner (an HSM key named by a second entry)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  /** More than 1 while a governance root change is in progress: the old root's rules still pass until it leaves the pin. */
  readonly pinnedRoots = new client.Gauge({
    name: 'xks_governance_pinned_roots',
    help: 'Governance roots pinned in XKS_GOVERNANCE_TRUST(_FILE); above 1, remove the old root once the root change is done',
    registers: [this.registry],
    aggregator: 'max',
    collect() {
      try {
        this.set(pinnedRoots(process.env)?.size ?? 0);
      } catch {
        /* an unreadable pin file: every config is refused and says why */
      }
    },
  });
  /** Above 0 while an approved change has not reached this process: its protected state is older than the HSMs' newest. */
  readonly statesBehind = new client.Gauge({
    name: 'xks_governance_states_behind',
    help: 'Quorum-protected groups whose running state is older than the newest the HSMs accepted (a governed change that has not reached this process)',
    registers: [this.registry],
    aggregator: 'max',
  });
  /** Above 0 after an upgrade until governed changes record what the quorum did not cover before. */
  readonly unprotected = new client.Gauge({
    name: 'xks_governance_unprotected',
    help: 'What quorum-protected groups leave outside the quorum: key_version (versions without a check value: another token holding keys under their labels would be used), key_store (key stores reaching them whose identity, credentials included, is not recorded)',
    labelNames: ['kind'] as const,
    registers: [this.registry],
    aggregator: 'max',
    collect: () => {
      const gaps = this.state?.protectionGaps?.();
      this.unprotected.set({ kind: 'key_version' }, gaps?.uncheckedKeyVersions.length ?? 0);
      this.unprotected.set({ kind: 'key_store' }, gaps?.unrecordedKeyStores.length ?? 0);
    },
  });
  readonly keyCheckFailures = new client.Counter({
    name: 'xks_key_check_failures_total',
    help: "Uses of a key version refused on an HSM (hsm_id) because its object does not open the version's recorded check value: other key material under the recorded label and CKA_ID",
    labelNames: ['hsm_id'] as const,
    registers: [this.registry],
  });
  /** Registered on the first certificate event: without TLS there is no such metric at all (not a 0). */
  private certificateExpiry: client.Gauge | undefined;

  constructor(collectDefault = true) {
    if (collectDefault) client.collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 10 });
    for (const result of RELOAD_RESULTS) this.configReloads.inc({ result }, 0);
    for (const reason of REFUSAL_REASONS) this.governanceRefusals.inc({ reason }, 0);
    this.restartPending.set(0);
  }

  /** Creates at 0 the series of every key store and HSM id of the configuration (again after each reload: it may add some). */
  private zeroKnown(): void {
    const known = this.state?.known?.();
    if (!known) return;
    for (const key_store of known.keyStores) {
      for (const operation of Object.keys(OPERATIONS)) {
        this.requestSeconds.zero({ key_store, operation });
        this.requests.inc({ key_store, operation, error_name: 'none', retryable: 'false' }, 0);
        for (const name of Object.keys(XKS_ERROR_STATUS) as XksErrorName[]) {
          this.requests.inc({ key_store, operation, error_name: name, retryable: String(RETRYABLE_ERRORS.has(name)) }, 0);
        }
      }
      for (const reason of Object.keys(AUTH_FAILURES)) this.authFailures.inc({ key_store, reason }, 0);
      for (const reason of SHED_REASONS) this.shed.inc({ key_store, reason }, 0);
      for (const stage of ABORT_STAGES) this.clientAborts.inc({ key_store, stage }, 0);
    }
    // A breaker that never opened is closed: 0, not absent, so the dashboard shows every HSM.
    for (const hsm_id of known.hsmIds) if (!this.breakerSeen.has(hsm_id)) this.breakerOpen.set({ hsm_id }, 0);
    for (const hsm_id of known.hsmIds) this.keyCheckFailures.inc({ hsm_id }, 0);
  }

  /** Subscribes to the proxy's events and reads `state` at scrape time; returns an unsubscriber. */
  attach(bus: ProxyEvents, state: MetricsState): () => void {
    this.state = state;
    this.zeroKnown();
    const off = [
      bus.subscribe('hsm.operation', (e) => {
        const b = this.hsmChildren(e.operation, e.hsm);
        b.histogram.observe(e.seconds);
        if (!e.ok) b.errors.inc();
      }),
      bus.subscribe('health.report', ({ report }) => {
        for (const s of ['ACTIVE', 'DEGRADED', 'UNAVAILABLE']) {
          this.ekmHealth.set({ state: s }, report.status === s ? 1 : 0);
          for (const m of report.members ?? []) this.ekmHealth.set({ state: s, hsm_id: m.id }, m.healthStatus === s ? 1 : 0);
        }
      }),
      bus.subscribe('hsm.breaker', (e) => {
        this.breakerSeen.add(e.hsm);
        this.breakerOpen.set({ hsm_id: e.hsm }, e.open ? 1 : 0);
      }),
      bus.subscribe('config.reload', (e) => {
        this.configReloads.inc({ result: e.ok ? 'success' : e.restartRequired ? 'restart_required' : 'failure' });
        if (e.ok) {
          this.restartPending.set(0);
          this.zeroKnown();
        } else if (e.restartRequired) this.restartPending.set(1);
      }),
      bus.subscribe('connection.dropped', () => this.connectionsDropped.inc()),
      bus.subscribe('connection.closedStale', () => this.connectionsClosedStale.inc()),
      bus.subscribe('tls.clientRefused', (e) => this.mtlsRefusals.inc({ reason: e.reason })),
      bus.subscribe('governance.refusal', (e) => this.governanceRefusals.inc({ reason: e.reason })),
      bus.subscribe('governance.behind', (e) => this.statesBehind.set(e.groups)),
      bus.subscribe('key.check-failed', (e) => this.keyCheckFailures.inc({ hsm_id: e.hsm })),
      bus.subscribe('tls.certificate', (e) => {
        this.certificateExpiry ??= new client.Gauge({
          name: 'xks_tls_certificate_expiry_days',
          help: 'Days until the serving TLS certificate expires (KMS alarms below 10)',
          aggregator: 'min',
          registers: [this.registry],
        });
        this.certificateExpiry.set(e.daysToExpiry);
      }),
    ];
    return () => off.forEach((unsubscribe) => unsubscribe());
  }

  countShed(keyStore: string, reason: 'hsm_wait' | 'event_loop'): void {
    this.shed.inc({ key_store: keyStore, reason });
  }

  /** Label-bound children per (operation, HSM), as for requests below: one or two HSM calls per request. */
  private readonly boundHsm = new Map<string, { histogram: ReturnType<Metrics['hsmSeconds']['labels']>; errors: ReturnType<Metrics['hsmErrors']['labels']> }>();

  private hsmChildren(operation: string, hsm: string): { histogram: ReturnType<Metrics['hsmSeconds']['labels']>; errors: ReturnType<Metrics['hsmErrors']['labels']> } {
    const id = `${operation}\0${hsm}`;
    let b = this.boundHsm.get(id);
    if (!b) {
      // HSM ids come from config (at most 10) and operations from the engine: the map stays small.
      b = { histogram: this.hsmSeconds.labels({ operation, hsm_id: hsm }), errors: this.hsmErrors.labels({ operation, hsm_id: hsm }) };
      this.boundHsm.set(id, b);
    }
    return b;
  }

  /** Label-bound children per (key store, operation, outcome): saves prom-client's label hashing per request. */
  private readonly bound = new Map<string, { counter: ReturnType<Metrics['requests']['labels']>; histogram: ReturnType<Metrics['requestSeconds']['labels']> }>();

  observeRequest(keyStore: string, operation: string, errorName: XksErrorName | undefined, retryable: boolean, seconds: number): void {
    const id = `${keyStore}\0${operation}\0${errorName ?? ''}`;
    let b = this.bound.get(id);
    if (!b) {
      b = {
        counter: this.requests.labels({ key_store: keyStore, operation, error_name: errorName ?? 'none', retryable: errorName ? String(retryable) : 'false' }),
        histogram: this.requestSeconds.labels({ key_store: keyStore, operation }),
      };
      // Key store names come from config, so the map stays small; a reload that renames many is rare.
      if (this.bound.size > 10_000) this.bound.clear();
      this.bound.set(id, b);
    }
    b.counter.inc();
    b.histogram.observe(seconds);
  }
}
