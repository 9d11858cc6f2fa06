import { hash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';

/**
 * Tamper-evident audit trail: one JSON line per event, each carrying the SHA-256 of the previous
 * line's hash and its own content, so an edited, inserted or removed line breaks the chain.
 * Lines are written with a synchronous write, before the answer leaves: a line the proxy reported
 * is on disk (page cache) or in the stdout pipe even if the process is killed right after.
 */
export const GENESIS = '0'.repeat(64);

/** Marks the audit lines on stdout, where they share the stream with the request log. */
export const AUDIT_STREAM = 'xks-audit';

export type AuditEvent = Record<string, string | number | boolean | undefined>;

export function chainDigest(prev: string, body: string): string {
  // One-shot: the same bytes as hashing prev, '\n' and body in turn, without a Hash object per line.
  return hash('sha256', `${prev}\n${body}`, 'hex');
}

/** Reads the last line of a file without reading the whole file. */
function lastLine(file: string): string | undefined {
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    const chunk = Buffer.alloc(Math.min(size, 64 * 1024));
    readSync(fd, chunk, 0, chunk.length, size - chunk.length);
    const lines = chunk.toString('utf8').split('\n').filter(Boolean);
    return lines[lines.length - 1];
  } finally {
    closeSync(fd);
  }
}

export class AuditLog {
  private constructor(
    private readonly fd: number,
    private readonly ownsFd: boolean,
    private prev: string,
    private seq: number,
    /** Leading fields of every line (stdout: stream marker, chain id, pod). */
    private readonly head: Record<string, string> = {},
  ) {}

  /** Opens (or creates) a log and continues its chain. */
  static open(file: string): AuditLog {
    let prev = GENESIS;
    let seq = 0;
    if (existsSync(file)) {
      const last = lastLine(file);
      if (last) {
        const parsed = JSON.parse(last) as { seq: number; hash: string };
        prev = parsed.hash;
        seq = parsed.seq;
      }
    }
    return new AuditLog(openSync(file, 'a', 0o640), true, prev, seq);
  }

  /**
   * A fresh chain on stdout (fd 1), written with writeSync like the file: the request log's buffered
   * writes share the fd, so lines are picked out by their leading `"stream":"xks-audit"` and grouped
   * by `chain` (pod name + process start), which a restarted container or a cluster worker changes.
   */
  static stdout(pod: string, fd = 1): AuditLog {
    const chain = `${pod}/${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
    return new AuditLog(fd, false, GENESIS, 0, { stream: AUDIT_STREAM, chain, pod });
  }

  append(event: AuditEvent): void {
    this.seq += 1;
    const body = JSON.stringify({ ...this.head, seq: this.seq, time: new Date().toISOString(), ...event, prev: this.prev });
    const hash = chainDigest(this.prev, body);
    writeSync(this.fd, `${body.slice(0, -1)},"hash":"${hash}"}\n`);
    this.prev = hash;
  }

  close(): void {
    if (this.ownsFd) closeSync(this.fd);
  }
}

export interface AuditSettings {
  file?: string;
  stdout?: boolean;
}

/**
 * The audit log a proxy process writes, if any. `suffix` keeps cluster workers on chains of their
 * own; the pod name (POD_NAME from the downward API, else HOSTNAME) names a stdout chain.
 */
export function openAudit(cfg: AuditSettings, opts: { suffix?: string; podName?: string } = {}): AuditLog | undefined {
  if (cfg.stdout) {
    const pod = opts.podName ?? process.env.POD_NAME ?? process.env.HOSTNAME ?? hostname();
    return AuditLog.stdout(pod + (opts.suffix ?? ''));
  }
  return cfg.file ? AuditLog.open(cfg.file + (opts.suffix ?? '')) : undefined;
}
