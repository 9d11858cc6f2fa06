import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import * as pkcs11js from 'pkcs11js';
import type { Registry } from 'prom-client';
import { Counter, Gauge } from 'prom-client';
import type { RuntimeConfig } from '../config/load';
import type { ProxyConfig } from '../config/schema';
import { openFleetToken } from '../engine/replicate';
import { createDataObject, dataObjectValue, findDataObjects, TokenSession } from '../engine/token';
import type { ProxyEvents } from '../events';
import type { Logger } from '../log';
import type { HsmMember } from './high-water';

/** Encryptions per HSM key label (one label = one key version). */
export type UsageCounts = Map<string, number>;

interface UsageFile {
  encryptions?: Record<string, number>;
  /** Written by a process that also counts in the HSM: already there, so never imported. */
  hsm?: boolean;
}

/**
 * Sums the usage files of every process that ever served (one file each, never shared), so restarts
 * and replicas add up as long as they write to one directory (a shared volume in Kubernetes).
 * `legacyOnly`: only files of processes that did not count in the HSM (written before the upgrade).
 */
export function readUsage(dir: string, legacyOnly = false): UsageCounts {
  const total: UsageCounts = new Map();
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return total;
  }
  for (const name of names.filter((n) => n.endsWith('.usage.json'))) {
    try {
      const file = JSON.parse(readFileSync(join(dir, name), 'utf8')) as UsageFile;
      if (legacyOnly && file.hsm) continue;
      addCounts(total, Object.entries(file.encryptions ?? {}));
    } catch {
      /* a file being replaced: the rename makes the next read whole */
    }
  }
  return total;
}

function addCounts(total: UsageCounts, counts: Iterable<[string, number]>): void {
  for (const [label, n] of counts) {
    if (Number.isSafeInteger(n) && n > 0) total.set(label, (total.get(label) ?? 0) + n);
  }
}

/** Per label, the largest of several counts of the same encryptions (each source can only lag behind, never run ahead). */
export function maxUsage(...sources: UsageCounts[]): UsageCounts {
  const out: UsageCounts = new Map();
  for (const s of sources) for (const [label, n] of s) out.set(label, Math.max(out.get(label) ?? 0, n));
  return out;
}

/**
 * Counts in the HSM, where whoever writes the config cannot reach them: each counting process (a "writer")
 * keeps one private token data object per HSM (`xks-usage <writer>`) holding its cumulative counts, replaced
 * by a newer snapshot (seq + 1) as it counts; the token refuses to change a data object's value, and a crash
 * between writing the new snapshot and destroying the old leaves both, of which the newest counts. The writers
 * of processes gone for an hour are folded into a starting process's snapshot, so the objects stay few.
 */
const APPLICATION = 'xks-proxy usage';
const IMPORT_WRITER = 'import';
/** A live writer writes at least this often, even idle, so that its snapshot never looks abandoned. */
const HEARTBEAT_MS = 600_000;
const FOLD_AFTER_MS = 6 * HEARTBEAT_MS;

interface Snapshot {
  writer: string;
  seq: number;
  at: number;
  counts: Record<string, number>;
}

interface Stored extends Snapshot {
  handle: pkcs11js.Handle;
}

/**
 * Every snapshot on the token. One that vanishes between find and read was replaced by its writer meanwhile,
 * so the list is read again (whose find then has the newer one) rather than missing that writer.
 */
function readSnapshots(t: TokenSession, attempts = 3): Stored[] {
  let vanished = false;
  const list = findDataObjects(t, APPLICATION).flatMap((handle) => {
    let value: Buffer;
    try {
      value = dataObjectValue(t, handle);
    } catch {
      vanished = true;
      return [];
    }
    try {
      const s = JSON.parse(value.toString('utf8')) as Snapshot;
      return typeof s.writer === 'string' && Number.isSafeInteger(s.seq) && typeof s.counts === 'object' ? [{ ...s, handle }] : [];
    } catch {
      return [];
    }
  });
  return vanished && attempts > 1 ? readSnapshots(t, attempts - 1) : list;
}

function latestPerWriter<T extends Snapshot>(snapshots: readonly T[]): Map<string, T> {
  const latest = new Map<string, T>();
  for (const s of snapshots) if ((latest.get(s.writer)?.seq ?? -1) < s.seq) latest.set(s.writer, s);
  return latest;
}

function sumOf(latest: Iterable<Snapshot>): UsageCounts {
  const total: UsageCounts = new Map();
  for (const s of latest) addCounts(total, Object.entries(s.counts));
  return total;
}

/** What one HSM says: its writers' latest counts, summed. */
export function hsmUsage(t: TokenSession): UsageCounts {
  return sumOf(latestPerWriter(readSnapshots(t)).values());
}

function writeSnapshot(t: TokenSession, writer: string, seq: number, counts: UsageCounts): Snapshot {
  const snapshot: Snapshot = { writer, seq, at: Date.now(), counts: Object.fromEntries(counts) };
  createDataObject(t, APPLICATION, `xks-usage ${writer}`, Buffer.from(JSON.stringify({ v: 1, ...snapshot })));
  return snapshot;
}

/** The largest current-version used/maxEncryptions over the keys whose rotation policy sets a usage limit (0 if none). */
function usageRatioMax(config: ProxyConfig, usage: UsageCounts): number {
  let max = 0;
  for (const g of config.groups) {
    for (const k of g.keys) {
      const limit = k.rotation?.maxEncryptions;
      if (!limit) continue;
      const versions = k.versions ?? [{ version: 1, label: k.label as string }];
      const current = versions.reduce((a, b) => (b.version > a.version ? b : a));
      max = Math.max(max, (usage.get(current.label) ?? 0) / limit);
    }
  }
  return max;
}

interface MemberState {
  member: HsmMember;
  /** Counts folded in from writers that are gone (on this HSM). */
  base: UsageCounts;
  seq: number;
  started: boolean;
  lastWrite: number;
  /** What this HSM said at the last flush, for the ratio gauge. */
  total: UsageCounts;
}

export interface UsageRecorderOptions {
  /** governance.usageDir: also write a file there per process (a copy of the counts; imported once into the HSM). */
  dir?: string;
  flushMs?: number;
  registry?: Registry;
  replica?: string;
  logger?: Logger;
}

/**
 * Counts this process's successful encryptions per key version from the engine's 'key.encrypted' events and
 * every `flushMs` writes them to every HSM of the fleet (and, with `dir`, to `<dir>/<pod>-<pid>-<random>.usage.json`).
 * It runs whatever the config says: deleting, editing or repointing the usage files cannot lower a count, and
 * `key rotate-due` takes, per key version, the largest of what the HSMs and the files say. A crash loses at most
 * one interval of counts, which the rotation limit's margin must cover; an HSM that refuses the write keeps the
 * counts pending in memory (xks_usage_hsm_write_failures_total) until it takes them.
 */
export class UsageRecorder {
  private readonly counts: UsageCounts = new Map();
  private readonly writer: string;
  private readonly file: string | undefined;
  private readonly members: MemberState[];
  private readonly timer: NodeJS.Timeout;
  private readonly off: () => void;
  private dirty = false;
  private readonly gauge: Gauge | undefined;
  private readonly failures: Counter | undefined;
  private lastWarning = 0;

  constructor(
    events: ProxyEvents,
    private readonly runtime: () => RuntimeConfig,
    private readonly opts: UsageRecorderOptions = {},
  ) {
    const replica = (opts.replica ?? process.env.POD_NAME ?? hostname()).replace(/[^A-Za-z0-9._-]/g, '_');
    this.writer = `${replica}-${process.pid}-${randomBytes(4).toString('hex')}`;
    if (opts.dir) {
      mkdirSync(opts.dir, { recursive: true, mode: 0o750 });
      this.file = join(opts.dir, `${this.writer}.usage.json`);
    }
    // The HSMs of the start: the hsm sections change only on restart, as for the engine.
    const { config, hsmPins } = runtime();
    this.members = config.hsms.map((h) => ({ member: { id: h.id, target: h, pin: hsmPins.get(h.id) as string }, base: new Map(), seq: 0, started: false, lastWrite: 0, total: new Map() }));
    this.off = events.subscribe('key.encrypted', (e) => {
      this.counts.set(e.label, (this.counts.get(e.label) ?? 0) + 1);
      this.dirty = true;
    });
    if (opts.registry) {
      this.gauge = new Gauge({
        name: 'xks_key_version_usage_ratio_max',
        help: 'Highest encryptions/maxEncryptions over the current versions of keys with a usage rotation policy, summed over all replicas (rotate at 1)',
        registers: [opts.registry],
        aggregator: 'max',
      });
      this.failures = new Counter({
        name: 'xks_usage_hsm_write_failures_total',
        help: 'Usage count flushes an HSM refused; the counts stay pending in memory until one succeeds',
        registers: [opts.registry],
      });
    }
    this.timer = setInterval(() => this.flush(), opts.flushMs ?? 10_000);
    this.timer.unref();
  }

  flush(): void {
    if (this.file && this.dirty) {
      const tmp = `${this.file}.tmp`;
      try {
        writeFileSync(tmp, JSON.stringify({ encryptions: Object.fromEntries(this.counts), hsm: true, at: new Date().toISOString() }));
        renameSync(tmp, this.file);
      } catch (e) {
        this.opts.logger?.warn({ err: (e as Error).message }, 'cannot write the usage file; the HSMs still count');
      }
    }
    let allWritten = true;
    for (const m of this.members) {
      try {
        this.flushTo(m);
      } catch (e) {
        allWritten = false;
        this.failures?.inc();
        if (Date.now() - this.lastWarning > HEARTBEAT_MS) {
          this.lastWarning = Date.now();
          this.opts.logger?.warn({ hsm: m.member.id, err: (e as Error).message }, 'cannot write the usage counts to the HSM; keeping them pending');
        }
      }
    }
    if (allWritten) this.dirty = false;
    const files = this.opts.dir ? readUsage(this.opts.dir) : new Map<string, number>();
    this.gauge?.set(usageRatioMax(this.runtime().config, maxUsage(files, ...this.members.map((m) => m.total))));
  }

  /** One HSM: on first contact folds the writers gone for an hour and imports the legacy files once; writes this writer's snapshot. */
  private flushTo(m: MemberState): void {
    const t = openFleetToken(m.member.target, m.member.pin);
    try {
      const snapshots = readSnapshots(t);
      const latest: Map<string, Snapshot> = latestPerWriter(snapshots);
      const retire = snapshots.filter((s) => s.writer === this.writer);
      if (!m.started) {
        for (const [writer, s] of latest) {
          if (writer === this.writer || writer === IMPORT_WRITER || Date.now() - s.at < FOLD_AFTER_MS) continue;
          addCounts(m.base, Object.entries(s.counts));
          retire.push(...snapshots.filter((x) => x.writer === writer));
          latest.delete(writer);
        }
        // Counts of the processes that wrote only files (before the upgrade), taken into the HSM once.
        if (!latest.has(IMPORT_WRITER)) latest.set(IMPORT_WRITER, writeSnapshot(t, IMPORT_WRITER, 1, this.opts.dir ? readUsage(this.opts.dir, true) : new Map<string, number>()));
      }
      if (this.dirty || !m.started || Date.now() - m.lastWrite >= HEARTBEAT_MS) {
        const mine = new Map(m.base);
        addCounts(mine, this.counts);
        m.seq = Math.max(m.seq, latest.get(this.writer)?.seq ?? 0) + 1;
        latest.set(this.writer, writeSnapshot(t, this.writer, m.seq, mine));
        // Only once the new snapshot (holding the folded counts) exists: a crash in between over-counts, never under.
        for (const s of retire) {
          try {
            t.mod.C_DestroyObject(t.session, s.handle);
          } catch {
            /* gone already (another process folded it): its counts are in that process's snapshot */
          }
        }
        m.started = true;
        m.lastWrite = Date.now();
      }
      m.total = sumOf(latest.values());
    } finally {
      t.close();
    }
  }

  dispose(): void {
    clearInterval(this.timer);
    this.off();
    this.flush();
    // A successor in the same process (a restart in tests, a reconfigured recorder) registers them again.
    if (this.gauge) this.opts.registry?.removeSingleMetric('xks_key_version_usage_ratio_max');
    if (this.failures) this.opts.registry?.removeSingleMetric('xks_usage_hsm_write_failures_total');
  }
}
