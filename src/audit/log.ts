import { createHash } from 'node:crypto';
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';

/**
 * Tamper-evident audit trail: one JSON line per event, each carrying the SHA-256 of the previous
 * line's hash and its own content, so an edited, inserted or removed line breaks the chain.
 * Lines are written with a synchronous append: a line the proxy reported is on disk (page cache)
 * even if the process is killed right after.
 */
const GENESIS = '0'.repeat(64);

export type AuditEvent = Record<string, string | number | boolean | undefined>;

function digest(prev: string, body: string): string {
  return createHash('sha256').update(prev).update('\n').update(body).digest('hex');
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
    private prev: string,
    private seq: number,
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
    return new AuditLog(openSync(file, 'a', 0o640), prev, seq);
  }

  append(event: AuditEvent): void {
    this.seq += 1;
    const body = JSON.stringify({ seq: this.seq, time: new Date().toISOString(), ...event, prev: this.prev });
    const hash = digest(this.prev, body);
    writeSync(this.fd, `${body.slice(0, -1)},"hash":"${hash}"}\n`);
    this.prev = hash;
  }

  close(): void {
    closeSync(this.fd);
  }
}

export type VerifyResult = { ok: true; lines: number } | { ok: false; line: number; reason: string };

export function verifyAuditFile(file: string): VerifyResult {
  const lines = readFileSync(file, 'utf8').split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  let prev = GENESIS;
  let seq: number | undefined;
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1;
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(lines[i] as string) as Record<string, unknown>;
    } catch {
      return { ok: false, line: n, reason: 'not JSON' };
    }
    const { hash, ...rest } = entry;
    if (rest.prev !== prev) return { ok: false, line: n, reason: 'chain broken: prev does not match the previous line (line removed or inserted?)' };
    if (seq !== undefined && rest.seq !== seq + 1) return { ok: false, line: n, reason: 'sequence gap' };
    if (digest(prev, JSON.stringify(rest)) !== hash) return { ok: false, line: n, reason: 'hash mismatch: line edited' };
    prev = hash as string;
    seq = rest.seq as number;
  }
  return { ok: true, lines: lines.length };
}
