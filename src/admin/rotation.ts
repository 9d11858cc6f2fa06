import { ConfigError } from '../config/load';
import type { KeyConfig } from '../config/schema';
import { hsmUsage, maxUsage, readUsage, UsageCounts } from '../governance/usage';
import { keyPath } from '../store/config-store';
import type { AdminContext } from './context';
import { onEveryHsm } from './fleet';
import { rotateKey } from './keys';

const DAY_MS = 86_400_000;

export interface RotationPolicyInput {
  everyDays?: number;
  startAt?: string;
  maxEncryptions?: number;
}

export function setRotation(ctx: AdminContext, id: string, policy: RotationPolicyInput): object {
  const clean = Object.fromEntries(Object.entries(policy).filter(([, v]) => v !== undefined));
  ctx.store.update((doc, config) => {
    const p = keyPath(config, id);
    const path = ['groups', p.group, 'keys', p.key, 'rotation'];
    if (Object.keys(clean).length === 0) doc.deleteIn(path);
    else doc.setIn(path, doc.createNode(clean));
  });
  ctx.audit({ action: 'key-set-rotation', keyId: id, ...clean });
  return { keyId: id, rotation: Object.keys(clean).length ? clean : 'none' };
}

/**
 * Why the current version of a key is due, or undefined. Scheduled rotations fall at startAt + k·everyDays
 * (startAt defaults to the version's creation); one is due once a point has passed since the version was made.
 */
export function dueReason(key: KeyConfig, usage: UsageCounts, now: Date): string | undefined {
  const policy = key.rotation;
  if (!policy || key.deletion) return undefined;
  const versions = key.versions ?? [{ version: 1, label: key.label as string }];
  const current = versions.reduce((a, b) => (b.version > a.version ? b : a));
  if (policy.maxEncryptions !== undefined) {
    const used = usage.get(current.label) ?? 0;
    if (used >= policy.maxEncryptions) return `${used} encryptions with version ${current.version} (limit ${policy.maxEncryptions})`;
  }
  if (policy.everyDays !== undefined) {
    const created = 'createdAt' in current && current.createdAt ? Date.parse(current.createdAt) : undefined;
    const start = policy.startAt ? Date.parse(policy.startAt) : created;
    if (start === undefined) return undefined; // no anchor: nothing to count from (describe shows it)
    const period = policy.everyDays * DAY_MS;
    const next = created === undefined || created < start ? start + (created === undefined ? period : 0) : start + (Math.floor((created - start) / period) + 1) * period;
    if (now.getTime() >= next) return `scheduled rotation at ${new Date(next).toISOString()} (every ${policy.everyDays} days)`;
  }
  return undefined;
}

/**
 * Encryptions per key version: per label the largest of what each HSM of the fleet holds (written there by the
 * proxies, out of a config writer's reach) and what the usage files say, so that deleting or repointing the files
 * cannot make a key look less used. An HSM that cannot be read fails the command rather than count zero.
 */
function usageCounts(ctx: AdminContext, dir: string | undefined): UsageCounts {
  const counts: UsageCounts[] = dir ? [readUsage(dir)] : [];
  try {
    onEveryHsm(ctx, (t) => counts.push(hsmUsage(t)));
  } catch (e) {
    throw new ConfigError(`cannot read the usage counts from the HSM: ${(e as Error).message}`);
  }
  return maxUsage(...counts);
}

/**
 * Rotates every key whose policy says it is due. Encrypts then use the new version; older versions
 * stay for decrypt only (the proxy never encrypts with anything but the newest). Keys in
 * quorum-protected groups are not rotated here: they are listed for `change propose key rotate ID`.
 */
export function rotateDue(ctx: AdminContext, opts: { dryRun?: boolean; usageDir?: string }): object {
  const config = ctx.store.read();
  const dir = opts.usageDir ?? config.governance.usageDir;
  const usage = usageCounts(ctx, dir);
  const now = ctx.now();
  const rotated: object[] = [];
  const needsQuorum: object[] = [];
  const due: object[] = [];
  for (const g of config.groups) {
    for (const k of g.keys) {
      const reason = dueReason(k, usage, now);
      if (!reason) continue;
      if (opts.dryRun) due.push({ keyId: k.id, reason });
      else if (g.quorum) needsQuorum.push({ keyId: k.id, group: g.name, reason, run: `xks-admin change propose --as NAME key rotate ${k.id}` });
      else {
        try {
          rotated.push({ ...rotateKey(ctx, k.id), reason });
          ctx.audit({ action: 'key-rotate-due', keyId: k.id, reason });
        } catch (e) {
          throw new ConfigError(`rotating ${k.id}: ${(e as Error).message}`);
        }
      }
    }
  }
  return opts.dryRun ? { due } : { rotated, needsQuorum, usageFrom: dir ? ['hsm', dir] : ['hsm'] };
}
