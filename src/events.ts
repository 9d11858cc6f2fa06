import dc from 'node:diagnostics_channel';
import type { HealthReport } from './engine/types';
import type { ClientRefusal } from './http/client-verdict';
import type { RefusalReason } from './governance/quorum';

/**
 * What the proxy's parts announce. Producers (engine, health monitor, config reloader, listener, request
 * pipeline) publish; consumers (metrics today) subscribe. Nobody calls a consumer directly, so a new
 * metric or a tracing exporter is a subscription, not a change to the code it observes.
 */
export interface ProxyEventMap {
  /** One HSM call as the request saw it (session wait included). */
  'hsm.operation': { hsm: string; operation: 'encrypt' | 'decrypt' | 'health' | 'check'; seconds: number; ok: boolean };
  /** A key version refused on an HSM because its object does not open the version's recorded check value (src/engine/check-value.ts). */
  'key.check-failed': { hsm: string };
  /** One successful encryption under a key version, by its HSM label (never a metric label). */
  'key.encrypted': { label: string };
  /** Connection state of one HSM: `misconfigured` is a permanent failure an operator must fix (reason names the call and CKR). */
  'hsm.state': { hsm: string; state: 'connected' | 'disconnected' | 'misconfigured'; reason?: string };
  /** A fleet's circuit breaker took an HSM out (open) or put it back after a passing probe (closed). */
  'hsm.breaker': { hsm: string; open: boolean };
  /** Every deep health check result. */
  'health.report': { report: HealthReport };
  /** ok false: refused, the running configuration kept; restartRequired names the restart-only settings it would change. */
  'config.reload': { ok: boolean; restartRequired?: readonly string[] };
  /** A config refused by governance (src/governance/quorum.ts RefusalReason: approvals, pinned root, rollback, ...). */
  'governance.refusal': { reason: RefusalReason; group?: string };
  /** Quorum-protected groups whose running state is older than the newest the HSMs accepted (src/governance/watch.ts). */
  'governance.behind': { groups: number };
  /** After each (re)load of the serving certificate. Never published without TLS. */
  'tls.certificate': { daysToExpiry: number };
  /** mTLS refused a client certificate (it got a handshake_failure alert); the reason is a small fixed set. */
  'tls.clientRefused': { reason: ClientRefusal };
  /** A new connection closed on arrival because server.maxConnections were open. */
  'connection.dropped': Record<string, never>;
  /** A connection the read gate kept paused past its stale limit, closed near server.maxConnections. */
  'connection.closedStale': Record<string, never>;
}

export type ProxyEventName = keyof ProxyEventMap;

let instances = 0;

/**
 * One bus per proxy instance, on node:diagnostics_channel (the mechanism fastify and undici use).
 * Channel names carry an instance number because several proxies can share one process (the test
 * suites start many); `xks-proxy.<n>.<event>`. Publishing with no subscriber costs one boolean check.
 */
export class ProxyEvents {
  readonly prefix = `xks-proxy.${++instances}.`;
  // diagnostics_channel holds channels weakly: keep them alive for as long as the bus lives.
  private readonly channels = new Map<string, dc.Channel>();

  private channel(name: ProxyEventName): dc.Channel {
    let c = this.channels.get(name);
    if (!c) this.channels.set(name, (c = dc.channel(this.prefix + name)));
    return c;
  }

  publish<K extends ProxyEventName>(name: K, message: ProxyEventMap[K]): void {
    const c = this.channel(name);
    if (c.hasSubscribers) c.publish(message);
  }

  /** Returns an unsubscriber. */
  subscribe<K extends ProxyEventName>(name: K, fn: (message: ProxyEventMap[K]) => void): () => void {
    const c = this.channel(name);
    const listener = (m: unknown): void => fn(m as ProxyEventMap[K]);
    c.subscribe(listener);
    return () => c.unsubscribe(listener);
  }
}
