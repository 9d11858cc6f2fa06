import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Registry } from 'prom-client';
import { Gauge } from 'prom-client';
import type { ProxyConfig } from '../config/schema';
import type { ProxyEvents } from '../events';

/** Encryptions per HSM key label (one label = one key version). */
export type UsageCounts = Map<string, number>;

/**
 * Sums the usage files of every process that ever served (one file each, never shared), so restarts
 * and replicas add up as long as they write to one directory (a shared volume in Kubernetes).
 */
export function readUsage(dir: string): UsageCounts {
  const total: UsageCounts = new Map();
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return total;
  }
  for (const name of names.filter((n) => n.endsWith('.usage.json'))) {
    try {
      const counts = JSON.parse(readFileSync(join(dir, name), 'utf8')) as { encryptions?: Record<string, number> };
      for (const [label, n] of Object.entries(counts.encryptions ?? {})) if (Number.isSafeInteger(n) && n > 0) total.set(label, (total.get(label) ?? 0) + n);
    } catch {
      /* a file being replaced: the rename makes the next read whole */
    }
  }
  return total;
}

/** The largest used/maxEncryptions over the keys whose rotation policy sets a usage limit (0 if none). */
export function usageRatioMax(config: ProxyConfig, usage: UsageCounts): number {
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

/**
 * Counts this process's successful encryptions per key version from the engine's 'key.encrypted' events and
 * writes them every `flushMs` (temp file + rename) to `<dir>/<pod>-<pid>-<random>.usage.json`. A crash
 * loses at most one interval of counts, which the rotation limit's margin must cover.
 */
export class UsageRecorder {
  private readonly counts: UsageCounts = new Map();
  private readonly file: string;
  private readonly timer: NodeJS.Timeout;
  private readonly off: () => void;
  private dirty = false;
  private gauge: Gauge | undefined;
  private readonly registry: Registry | undefined;

  constructor(
    private readonly dir: string,
    events: ProxyEvents,
    private readonly config: () => ProxyConfig,
    opts: { flushMs?: number; registry?: Registry; replica?: string } = {},
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o750 });
    const replica = (opts.replica ?? process.env.POD_NAME ?? hostname()).replace(/[^A-Za-z0-9._-]/g, '_');
    this.file = join(dir, `${replica}-${process.pid}-${randomBytes(3).toString('hex')}.usage.json`);
    this.off = events.subscribe('key.encrypted', (e) => {
      this.counts.set(e.label, (this.counts.get(e.label) ?? 0) + 1);
      this.dirty = true;
    });
    this.registry = opts.registry;
    if (opts.registry) {
      this.gauge = new Gauge({
        name: 'xks_key_version_usage_ratio_max',
        help: 'Highest encryptions/maxEncryptions over the current versions of keys with a usage rotation policy, summed over all replicas (rotate at 1)',
        registers: [opts.registry],
        aggregator: 'max',
      });
    }
    this.timer = setInterval(() => this.flush(), opts.flushMs ?? 10_000);
    this.timer.unref();
  }

  flush(): void {
    if (this.dirty) {
      const tmp = `${this.file}.tmp`;
      writeFileSync(tmp, JSON.stringify({ encryptions: Object.fromEntries(this.counts), at: new Date().toISOString() }));
      renameSync(tmp, this.file);
      this.dirty = false;
    }
    this.gauge?.set(usageRatioMax(this.config(), readUsage(this.dir)));
  }

  dispose(): void {
    clearInterval(this.timer);
    this.off();
    this.flush();
    // A successor in the same process (a restart in tests, a reconfigured recorder) registers it again.
    if (this.gauge) this.registry?.removeSingleMetric('xks_key_version_usage_ratio_max');
  }
}
