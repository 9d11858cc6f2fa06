import type { RuntimeConfig } from '../config/load';
import type { ProxyConfig } from '../config/schema';
import { FleetEngine } from './fleet';
import { recordedKeysOf, RecordedKey } from './key-lookup';
import { EngineDeps, Pkcs11Engine } from './pkcs11-engine';
import type { CryptoEngine, PoolStats } from './types';

export interface OpenEngineDeps extends Omit<EngineDeps, 'pin' | 'hsmId'> {
  /** The configuration in force, re-read for key placement after a reload. */
  runtime: () => RuntimeConfig;
  /** Consecutive retryable failures that take an HSM out of the fleet. */
  breakerFailures?: number;
  probeIntervalMs?: number;
}

/** Where each key version label lives: the HSM ids named on its versions, or undefined for every HSM. */
function keyPlacement(config: ProxyConfig): Map<string, readonly string[] | undefined> {
  const out = new Map<string, readonly string[] | undefined>();
  for (const g of config.groups) {
    for (const k of g.keys) {
      // A label belongs to one key version (src/config/load.ts refuses a second owner).
      for (const v of k.versions ?? [{ label: k.label as string, hsms: undefined }]) out.set(v.label, v.hsms);
    }
  }
  return out;
}

/**
 * The proxy's CryptoEngine: the one HSM's engine when a single HSM is configured (unchanged behaviour),
 * a FleetEngine over one Pkcs11Engine per HSM otherwise. Starts reporting missing key versions once
 * the members have connected.
 */
/** What the app needs beyond CryptoEngine: a warm-up before the port opens. */
export type ProxyEngine = CryptoEngine & { warmUp(rounds: number): Promise<void> };

export async function openEngine(deps: OpenEngineDeps): Promise<ProxyEngine> {
  const { runtime } = deps;
  const cfg = runtime().config;
  let records = { config: cfg, map: recordedKeysOf(cfg) };
  const recordOf = (label: string): RecordedKey | undefined => {
    const now = runtime().config;
    if (now !== records.config) records = { config: now, map: recordedKeysOf(now) };
    return records.map.get(label);
  };
  const engines = await Promise.all(
    cfg.hsms.map(({ id, ...hsm }) => Pkcs11Engine.open(hsm, { ...deps, pin: runtime().hsmPins.get(id) as string, hsmId: id, recordOf })),
  );
  if (engines.length === 1) return engines[0] as Pkcs11Engine;
  let placementOf = { config: cfg, map: keyPlacement(cfg) };
  let fleetRef: FleetEngine | undefined;
  const placement = (): Map<string, readonly string[] | undefined> => {
    const now = runtime().config;
    if (now !== placementOf.config) {
      placementOf = { config: now, map: keyPlacement(now) };
      // New or moved key versions: say now (log, health) which HSM lacks one, not at its first request.
      setImmediate(() => void fleetRef?.reportMissingKeys().catch(() => undefined));
    }
    return placementOf.map;
  };
  const fleet = new FleetEngine(
    cfg.hsms.map((h, i) => ({ id: h.id, engine: engines[i] as Pkcs11Engine })),
    {
      placement: (label) => placement().get(label),
      labels: () => [...placement().keys()],
      breakerFailures: deps.breakerFailures ?? 3,
      probeIntervalMs: deps.probeIntervalMs ?? 1000,
      healthTimeoutMs: Math.max(10, Math.floor(cfg.limits.deadlineMs * 0.8)),
      logger: deps.logger,
      events: deps.events,
    },
  );
  fleetRef = fleet;
  void fleet.reportMissingKeys().catch(() => undefined);
  return fleet;
}

/** Session pools per HSM id, for the xks_hsm_sessions gauge. */
export function hsmPools(engine: CryptoEngine, config: ProxyConfig): { id: string; pool: PoolStats }[] {
  if (engine instanceof FleetEngine) return engine.memberStats().map((m) => ({ id: m.id, pool: m.pool }));
  return [{ id: config.hsms[0]?.id ?? 'hsm-1', pool: engine.poolStats() }];
}
