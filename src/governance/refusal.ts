import cluster from 'node:cluster';
import { AuditLog } from '../audit/log';
import type { ProxyConfig } from '../config/schema';

/**
 * A running proxy that refused a config on governance grounds writes it to the admin chain
 * (<audit.file>.admin), beside the xks-admin entries, so the hand edit that tried it is on record.
 * Cluster workers each refuse the same file at once, so each appends to a chain of its own
 * (`.admin.worker<N>`, as the request chains): two processes appending to one chain would fork it.
 * With audit.stdout the refusal is in the proxy log only (no admin chain there).
 */
export function auditRefusal(config: ProxyConfig, detail: { reason: string; group?: string; message: string }): void {
  const file = config.audit.file;
  if (!file) return;
  const log = AuditLog.open(`${file}.admin${cluster.isWorker ? `.worker${cluster.worker?.id ?? 0}` : ''}`);
  try {
    log.append({ event: 'admin', action: 'governance-refusal', user: 'xks-proxy', pid: process.pid, ...detail });
  } finally {
    log.close();
  }
}
