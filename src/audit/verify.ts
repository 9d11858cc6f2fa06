import { AUDIT_STREAM, chainDigest, GENESIS } from './log';

/**
 * Verifies audit chains: a plain audit file (every line belongs to one chain), or lines collected from
 * a log pipeline, where the audit lines of many pods sit between other log lines, possibly behind a
 * collector's prefix (CRI "<time> stdout F ") or inside a Docker json-file wrapper ({"log": "..."}).
 */

export interface ChainHead {
  chain: string;
  pod?: string;
  /** Lines checked, duplicates not counted. */
  lines: number;
  firstSeq: number;
  seq: number;
  hash: string;
  time?: string;
}

/** A head recorded earlier (`xks-admin audit head`), kept off-host: the chain must still reach it. */
export interface Anchor {
  chain: string;
  seq: number;
  hash: string;
}

export type VerifyResult =
  | { ok: true; lines: number; chains: ChainHead[]; otherLines: number; duplicates: number; anchorsChecked: number }
  | { ok: false; line: number; chain?: string; reason: string };

export interface VerifyOptions {
  /** Accept a chain whose first lines are gone (log retention); its first line is then trusted. */
  partial?: boolean;
  anchors?: Anchor[];
  /**
   * Name of the one chain of a plain audit file, whose lines carry no chain field: its file name, so that one
   * anchors file holds the heads of all of a process's chains (audit.log, audit.log.worker1, audit.log.admin).
   */
  chain?: string;
}

/** Chain name of plain audit lines read without a name (stdin). */
const UNNAMED_CHAIN = '(stdin)';

const MARKER = `{"stream":"${AUDIT_STREAM}"`;

type Entry = Record<string, unknown> & { seq: number; prev: string; hash: string };
interface Located {
  line: number;
  entry: Entry;
}

/** The audit line inside one collected log line, if any. */
function extract(raw: string): string | undefined {
  let text = raw;
  if (!text.includes(MARKER) && text.startsWith('{"log":')) {
    try {
      const wrapped = (JSON.parse(text) as { log?: unknown }).log;
      if (typeof wrapped === 'string') text = wrapped;
    } catch {
      return undefined;
    }
  }
  const at = text.indexOf(MARKER);
  return at < 0 ? undefined : text.slice(at).trimEnd();
}

function parseEntry(text: string): Entry | undefined {
  try {
    const e = JSON.parse(text) as Entry;
    return e && typeof e === 'object' && typeof e.hash === 'string' ? e : undefined;
  } catch {
    return undefined;
  }
}

function checkChain(chain: string, list: Located[], opts: VerifyOptions, dedupe: boolean): { head: ChainHead; duplicates: number } | { line: number; reason: string } {
  let prev: string | undefined;
  let seq: number | undefined;
  let lines = 0;
  let duplicates = 0;
  let last: Located | undefined;
  const hashes = new Map<number, string>();
  for (const item of list) {
    const { hash, ...rest } = item.entry;
    if (dedupe && last && rest.seq === seq && hash === last.entry.hash) {
      duplicates++; // delivered twice by the pipeline: same line, nothing lost
      continue;
    }
    if (prev === undefined) {
      if (rest.seq !== 1 || rest.prev !== GENESIS) {
        if (!opts.partial) return { line: item.line, reason: `chain ${chain} starts at seq ${String(rest.seq)}: its first lines are missing (--partial verifies from there)` };
      }
      prev = rest.prev;
    } else if (rest.seq !== (seq as number) + 1) {
      return { line: item.line, reason: `sequence gap in chain ${chain}: seq ${String(rest.seq)} after ${String(seq)} (line removed?)` };
    }
    if (rest.prev !== prev) return { line: item.line, reason: 'chain broken: prev does not match the previous line (line removed or inserted?)' };
    if (chainDigest(prev, JSON.stringify(rest)) !== hash) return { line: item.line, reason: 'hash mismatch: line edited' };
    prev = hash;
    seq = rest.seq;
    hashes.set(seq, hash);
    last = item;
    lines++;
  }
  for (const a of opts.anchors ?? []) {
    if (a.chain !== chain) continue;
    const at = hashes.get(a.seq);
    // With --partial the input may begin after an anchor: lines that aged out cannot be compared.
    if (at === undefined && opts.partial && a.seq < (list[0]?.entry.seq ?? 0)) continue;
    if (at === undefined) return { line: last?.line ?? 0, reason: `chain ${chain} ends at seq ${String(seq)} but was anchored at seq ${a.seq}: its last lines are missing` };
    if (at !== a.hash) return { line: last?.line ?? 0, reason: `chain ${chain} differs from its anchor at seq ${a.seq}: rewritten` };
  }
  const e = (last as Located).entry;
  return {
    head: { chain, pod: typeof e.pod === 'string' ? e.pod : undefined, lines, firstSeq: list[0]?.entry.seq ?? 0, seq: e.seq, hash: e.hash, time: typeof e.time === 'string' ? e.time : undefined },
    duplicates,
  };
}

export function verifyAuditText(text: string, opts: VerifyOptions = {}): VerifyResult {
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const collected = lines.some((l) => l.includes(MARKER) || (l.startsWith('{"log":') && l.includes(`\\"stream\\":\\"${AUDIT_STREAM}\\"`)));
  const chains = new Map<string, Located[]>();
  let otherLines = 0;
  for (let i = 0; i < lines.length; i++) {
    const raw = (lines[i] as string).replace(/\r$/, '');
    const found = collected ? extract(raw) : raw;
    if (found === undefined) {
      otherLines++;
      continue;
    }
    const entry = parseEntry(found);
    if (!entry) return { ok: false, line: i + 1, reason: collected ? 'audit line is not JSON (damaged or cut?)' : 'not JSON' };
    const chain = collected ? String(entry.chain) : (opts.chain ?? UNNAMED_CHAIN);
    let list = chains.get(chain);
    if (!list) chains.set(chain, (list = []));
    list.push({ line: i + 1, entry });
  }
  // Collected lines hold every chain of the pods they came from, so an anchored chain missing from them was cut
  // whole; a plain file is one chain, checked against its own anchors only.
  const anchors = collected ? (opts.anchors ?? []) : (opts.anchors ?? []).filter((a) => a.chain === (opts.chain ?? UNNAMED_CHAIN));
  for (const a of anchors) {
    if (!chains.has(a.chain)) return { ok: false, line: 0, chain: a.chain, reason: `anchored chain ${a.chain} has no lines in the input` };
  }
  const heads: ChainHead[] = [];
  let duplicates = 0;
  for (const [chain, list] of chains) {
    // A pipeline may reorder lines across streams; within a chain the sequence number orders them.
    if (collected) list.sort((a, b) => a.entry.seq - b.entry.seq);
    const r = checkChain(chain, list, { ...opts, anchors }, collected);
    if ('reason' in r) return { ok: false, line: r.line, chain, reason: r.reason };
    heads.push(r.head);
    duplicates += r.duplicates;
  }
  return { ok: true, lines: heads.reduce((n, h) => n + h.lines, 0), chains: heads, otherLines, duplicates, anchorsChecked: anchors.length };
}
