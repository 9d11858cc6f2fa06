import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { Anchor, ChainHead, verifyAuditText, VerifyResult } from '../audit/verify';

/** `-` is stdin, so a log pipeline's export can be piped in (kubectl logs ... | xks-admin audit verify -). */
function readInput(source: string): string {
  return readFileSync(source === '-' ? 0 : source, 'utf8');
}

/** Anchors are earlier `audit head` outputs, one JSON object per line, possibly appended over time. */
function readAnchors(file: string): Anchor[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l, i) => {
      const a = JSON.parse(l) as Partial<Anchor>;
      if (typeof a.chain !== 'string' || typeof a.seq !== 'number' || typeof a.hash !== 'string') throw new Error(`${file}:${i + 1}: not an anchor (chain, seq, hash)`);
      return { chain: a.chain, seq: a.seq, hash: a.hash };
    });
}

/** A plain audit file's chain is named by the file (`--chain` names it otherwise, e.g. a copy or stdin). */
export function verifyAudit(source: string, opts: { partial?: boolean; anchors?: string; chain?: string }): VerifyResult {
  const chain = opts.chain ?? (source === '-' ? undefined : basename(source));
  return verifyAuditText(readInput(source), { partial: opts.partial, anchors: opts.anchors ? readAnchors(opts.anchors) : undefined, chain });
}

/** The last line of every chain, for storing off-host; fails like verify when a chain is broken. */
export function auditHeads(source: string, opts: { partial?: boolean; chain?: string }): VerifyResult | ChainHead[] {
  const r = verifyAudit(source, opts);
  return r.ok ? r.chains : r;
}
