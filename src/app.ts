import type { AddressInfo } from 'node:net';
import http from 'node:http';
import { AuditLog, openAudit } from './audit/log';
import type { RuntimeConfig } from './config/load';
import type { FleetEngine } from './engine/fleet';
import type { Pkcs11Module } from './engine/pkcs11-engine';
import { openEngine } from './engine/open-engine';
import { protectionGaps } from './governance/coverage';
import { HealthMonitor } from './health/monitor';
import { ProxyEvents } from './events';
import { OverloadGuard, OverloadOptions } from './http/overload';
import { ReadGate } from './http/read-gate';
import { createXksHandler, HandlerServices } from './http/pipeline';
import { LocalQuotas, Quotas } from './http/quota';
import { warmUpRequestPath } from './http/warm-up';
import { createListener, Listener } from './http/listener';
import type { Logger } from './log';
import { Metrics } from './metrics';
import { createOpsHandler, Readiness } from './ops';
import { VERSION } from './version';

export interface AppOptions {
  runtime: RuntimeConfig;
  logger: Logger;
  /** The key stores' request quotas (default: this process's own; a cluster worker leases from the primary). */
  quotas?: Quotas;
  /** Serve /metrics, /livez and /readyz from this process (false in cluster workers: the primary does). */
  opsServer?: boolean;
  /** Wraps the PKCS#11 module, for fault injection in tests. */
  createModule?: () => Pkcs11Module;
  metrics?: Metrics;
  /** Appended to audit.file so that each cluster worker keeps its own chain. */
  auditSuffix?: string;
  /** Event-loop overload detection (default: half the deadline as target, the deadline as interval). */
  overload?: OverloadOptions;
  /** Wall clock (ms) of the local quotas and the refusal logs' budgets; default Date.now (tests move their own). */
  now?: () => number;
}

/** HSM round trips on each fresh connection before the listener opens (see Pkcs11Engine.warmUp). */
const WARM_UP_ROUNDS = 64;

/**
 * One proxy process: HSM engine, health monitor, XKS listener and (optionally) the ops listener, wired
 * through one event bus that metrics (and any later consumer) subscribe to.
 */
export class ProxyApp {
  private runtimeNow: RuntimeConfig;
  /** Undefined only while start() builds the app, or after it failed before listening. */
  private xks: Listener | undefined;
  private flushPipeline: () => void = () => undefined;
  private ops: http.Server | undefined;
  /** Takes the metrics off the bus at stop: a Metrics passed in (opts.metrics) may outlive this app. */
  private detachMetrics: () => void = () => undefined;
  stopping = false;

  private constructor(
    runtime: RuntimeConfig,
    readonly engine: FleetEngine,
    readonly health: HealthMonitor,
    readonly metrics: Metrics,
    readonly events: ProxyEvents,
    private readonly log: Logger,
    private readonly audit: AuditLog | undefined,
    readonly overload: OverloadGuard,
  ) {
    this.runtimeNow = runtime;
  }

  static async start(opts: AppOptions): Promise<ProxyApp> {
    const { runtime, logger } = opts;
    const cfg = runtime.config;
    const metrics = opts.metrics ?? new Metrics();
    const events = new ProxyEvents();
    let app: ProxyApp | undefined;
    const engine = await openEngine({
      runtime: () => app?.runtimeNow ?? runtime,
      maxQueue: cfg.limits.maxQueue,
      logger,
      createModule: opts.createModule,
      events,
    });
    // A start that fails once the HSM is open (a port in use, an audit file it cannot open) leaves
    // nothing behind: no HSM sessions or login, no timers, no listening socket.
    try {
      // Settings read here, once, are the restart-only ones (src/config/schema.ts, RESTART): a reload that
      // changes them is refused, so `cfg` stays the configuration in force for them. Live settings are read
      // from app.runtimeNow where they are used.
      // One refresh checks every HSM of the fleet, so it runs as often as its most demanding member asks.
      const healthCacheMs = Math.min(...cfg.hsms.map((h) => h.healthCacheMs));
      const health = new HealthMonitor(
        engine,
        { cacheMs: healthCacheMs, degradedAboveMs: Math.floor(cfg.limits.deadlineMs / 2) },
        logger,
        events,
      );
      const audit = openAudit(cfg.audit, { suffix: opts.auditSuffix });
      // A request that waits half its deadline in the event loop's queue can no longer count on finishing
      // its HSM call and answer in time; below that, a late answer still beats a refusal (a 429 is an
      // error KMS shows its caller). A standing queue is one that outlasts a whole deadline.
      const shedAfter = cfg.limits.eventLoopShedMs ?? cfg.limits.deadlineMs / 2;
      const overload = new OverloadGuard(metrics, opts.overload ?? { targetMs: shedAfter === 0 ? Infinity : shedAfter, intervalMs: cfg.limits.deadlineMs });
      // Pausing reads engages well before shedding (a quarter of its delay): waiting in a socket buffer
      // costs nothing, a refusal costs CPU (src/http/read-gate.ts).
      const gate = new ReadGate({ targetMs: overload.target / 4, staleAfterMs: Math.max(1000, 5 * cfg.limits.deadlineMs), maxConnections: cfg.server.maxConnections, events, behind: () => overload.behindMs() });
      overload.onSample((lateMs) => gate.sample(lateMs));
      const made = new ProxyApp(runtime, engine, health, metrics, events, logger, audit, overload);
      app = made;
      made.detachMetrics = metrics.attach(events, {
        pool: () => engine.poolStats(),
        hsmPools: () => engine.memberStats(),
        hsm: () => engine.status().state,
        credentials: () => made.runtimeNow.config.keyStores.flatMap((ks) => ks.credentials.map((c) => ({ keyStore: ks.name, createdAt: c.createdAt }))),
        known: () => ({ keyStores: made.runtimeNow.config.keyStores.map((ks) => ks.name), hsmIds: cfg.hsms.map((h) => h.id) }),
        gate: () => gate.stats(),
        protectionGaps: () => protectionGaps(made.runtimeNow.config),
      });
      // A cold replica hit by full traffic at once used to answer 429/503 for about a second: warm the
      // HSM path, then the whole request path (server.warmUpRequests), before the port opens, so that
      // the first requests meet compiled code and a hold-time estimate made from real calls. The health
      // monitor starts after both, so that their calls are not taken for customer traffic.
      await engine.warmUp(WARM_UP_ROUNDS);

      const services: HandlerServices = {
        engine,
        health,
        // proxy.* reloads live (scaling the fleet changes fleetSize): read at each GetHealthStatus.
        identity: {
          get vendor() {
            return made.runtimeNow.config.proxy.vendor;
          },
          get model() {
            return made.runtimeNow.config.proxy.model ?? `xks-proxy ${VERSION}`;
          },
          get fleetSize() {
            return made.runtimeNow.config.proxy.fleetSize;
          },
        },
        limits: cfg.limits,
        logger,
        metrics,
        runtime: () => made.runtimeNow,
        quotas: opts.quotas ?? new LocalQuotas(opts.now),
        readiness: () => made.readiness(),
        draining: () => made.stopping,
        audit,
        overload,
        gate,
        now: opts.now,
      };
      // Only an optimisation: whatever goes wrong in it is logged, and the proxy starts anyway.
      try {
        const warm = await warmUpRequestPath(services, cfg.server.warmUpRequests);
        if (Object.keys(warm.failures).length > 0) logger.warn({ ...warm }, 'request-path warm-up: some requests failed');
        else logger.info({ requests: warm.requests, answered: warm.answered, ms: warm.ms }, 'request path warmed up');
      } catch (e) {
        logger.warn({ err: (e as Error).message }, 'request-path warm-up failed; starting without it');
      }
      await health.refresh();
      health.start();
      overload.start();
      const handler = createXksHandler(services);
      made.xks = createListener(handler, {
        tls: cfg.server.tls,
        keepAliveTimeoutMs: cfg.server.keepAliveTimeoutMs,
        maxConnections: cfg.server.maxConnections,
        headersTimeoutMs: cfg.server.headersTimeoutMs,
        requestTimeoutMs: cfg.server.requestTimeoutMs,
        logger,
        events,
      });
      made.xks.server.on('checkContinue', handler.checkContinue);
      made.flushPipeline = () => handler.flush();
      await listen(made.xks.server, cfg.server.port, cfg.server.host);
      if (opts.opsServer !== false && cfg.ops.enabled) {
        made.ops = http.createServer(
          createOpsHandler({
            readiness: () => made.readiness(),
            metrics: () => metrics.registry.metrics(),
            metricsContentType: metrics.registry.contentType,
          }),
        );
        await listen(made.ops, cfg.ops.port, cfg.ops.host);
      }
      logger.info({ port: made.port, opsPort: made.opsPort, tls: cfg.server.tls !== undefined, keyStores: runtime.keyStores.size }, 'xks-proxy listening');
      return made;
    } catch (e) {
      await (app ? app.stop(0) : engine.close()).catch(() => undefined);
      throw e;
    }
  }

  get runtime(): RuntimeConfig {
    return this.runtimeNow;
  }

  /**
   * Swaps in a new validated configuration; requests in flight finish with the one they started with.
   * The engine takes up its key settings from config.reload, which the reloader publishes right after.
   */
  setRuntime(next: RuntimeConfig): void {
    this.runtimeNow = next;
  }

  get port(): number {
    return (this.xksServer.address() as AddressInfo).port;
  }

  /** The XKS port's server (bench/stage-costs.ts drives requests into it without a network). */
  get xksServer(): http.Server {
    if (!this.xks) throw new Error('the XKS listener is not open');
    return this.xks.server;
  }

  get opsPort(): number | undefined {
    return this.ops ? (this.ops.address() as AddressInfo).port : undefined;
  }

  /** Ready to serve key operations: not draining, HSM connected and its last deep check not UNAVAILABLE. */
  ready(): boolean {
    return this.notReadyBecause() === undefined;
  }

  /**
   * Only a broken proxy is unready. Overload is not a reason: a load balancer that removes overloaded
   * replicas moves their load to the others and takes them down in turn. The pool and the event-loop
   * guard shed the excess instead, and `overloaded` reports it beside `ready`.
   */
  private notReadyBecause(): string | undefined {
    if (this.stopping) return 'draining';
    const hsm = this.engine.status();
    if (hsm.state !== 'connected' || !this.engine.isConnected()) return `HSM ${hsm.state}${hsm.reason ? `: ${hsm.reason}` : ''}`;
    const report = this.health.current();
    if (report?.status === 'UNAVAILABLE') return `HSM health check failed: ${report.detail ?? 'unavailable'}`;
    return undefined;
  }

  /** What /readyz reports (and GET /healthz on the XKS port, as a status code). */
  readiness(): Readiness {
    const reason = this.notReadyBecause();
    return {
      ready: reason === undefined,
      overloaded: this.overload.overloaded(),
      hsm: this.engine.status().state,
      hsmConnected: this.engine.isConnected(),
      ekm: this.health.current()?.status ?? 'UNKNOWN',
      ...(reason !== undefined && { reason }),
    };
  }

  /**
   * Graceful stop: readiness fails at once, the listener stops accepting, in-flight requests get up to
   * `graceMs` to finish, then idle keep-alive connections close and the HSM sessions are closed.
   */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.health.stop();
    this.overload.stop();
    if (this.xks) {
      this.xks.dispose();
      const server = this.xks.server;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const timer = setTimeout(() => server.closeAllConnections(), graceMs);
      await closed;
      clearTimeout(timer);
    }
    await new Promise<void>((resolve) => (this.ops ? this.ops.close(() => resolve()) : resolve()));
    await this.engine.close();
    // Every request is answered: what the pipeline still holds (a pending summary) goes to the audit before it closes.
    this.flushPipeline();
    this.audit?.close();
    this.detachMetrics();
    this.log.info('xks-proxy stopped');
  }
}

function listen(server: http.Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
