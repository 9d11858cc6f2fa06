import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { AuditLog } from '../audit/log';
import type { ProxyConfig } from '../config/schema';

type Refusal = { reason: string; group?: string; message: string };

/** Appends a governance-refusal line to the admin chain of this audit file (cluster workers: a chain each). */
function appendRefusal(auditFile: string, detail: Refusal & { at?: 'start' }): void {
  const log = AuditLog.open(`${auditFile}.admin${cluster.isWorker ? `.worker${cluster.worker?.id ?? 0}` : ''}`);
  try {
    log.append({ event: 'admin', action: 'governance-refusal', user: 'xks-proxy', pid: process.pid, ...detail });
  } finally {
    log.close();
  }
}

/**
 * A running proxy that refused a config on governance grounds writes it to the admin chain
 * (<audit.file>.admin), beside the xks-admin entries, so the hand edit that tried it is on record.
 * Cluster workers each refuse the same file at once, so each appends to a chain of its own
 * (`.admin.worker<N>`, as the request chains): two processes appending to one chain would fork it.
 * With audit.stdout the refusal is in the proxy log only (no admin chain there).
 */
export function auditRefusal(config: ProxyConfig, detail: Refusal): void {
  if (config.audit.file) appendRefusal(config.audit.file, detail);
}

/**
 * A config refused by governance at start (the process then exits 78): there is no running config, so the line
 * goes to the admin chain of the refused file's own `audit.file`, which governance refusals leave readable (the
 * file passed validation; what it lacked was approvals, a newer epoch, a matching secret...). A writer who also
 * repointed `audit.file` in that file chooses where this line lands; the process's log line (stdout, kept by the
 * log pipeline) does not depend on the file. Never throws: the exit is what matters.
 */
export function auditRefusalAtStart(configFile: string, detail: Refusal): void {
  try {
    const doc = parse(readFileSync(configFile, 'utf8')) as { audit?: { file?: unknown } } | null;
    const file = doc?.audit?.file;
    if (typeof file === 'string' && file !== '') appendRefusal(file, { ...detail, at: 'start' });
  } catch {
    /* an unreadable file or chain: the log line says it all */
  }
}
