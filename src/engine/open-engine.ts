import type { RuntimeConfig } from '../config/load';
import type { ProxyConfig } from '../config/schema';
import type { ProxyEvents } from '../events';
import { FleetEngine, Placement } from './fleet';
import { recordedKeysOf, RecordedKey } from './key-lookup';
import { EngineDeps, Pkcs11Engine } from './pkcs11-engine';

export interface OpenEngineDeps extends Omit<EngineDeps, 'pin' | 'hsmId' | 'recordOf' | 'events'> {
  /** The configuration in force; read at start and at each applied reload. */
  runtime: () => RuntimeConfig;
  /** The proxy's bus: the engine follows config.reload on it, and publishes its own events there. */
  events: ProxyEvents;
  /** Consecutive retryable failures that take an HSM out of the fleet. */
  breakerFailures?: number;
  probeIntervalMs?: number;
}

/** Where each key version label lives: the HSM ids named on its versions, or undefined for every HSM. */
function keyPlacement(config: ProxyConfig): Placement {
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
 * The proxy's CryptoEngine: a FleetEngine over one Pkcs11Engine per configured HSM, one HSM being a
 * fleet of one. What the configuration says about keys (where each version lives, the CKA_ID and check value
 * recorded for it) reaches the engine once per applied reload, through config.reload, never by a check per request.
 */
export async function openEngine(deps: OpenEngineDeps): Promise<FleetEngine> {
  const { runtime, events } = deps;
  const cfg = runtime().config;
  let records = recordedKeysOf(cfg);
  const recordOf = (label: string): RecordedKey | undefined => records.get(label);
  const engines = await Promise.all(
    cfg.hsms.map(({ id, ...hsm }) => Pkcs11Engine.open(hsm, { ...deps, pin: runtime().hsmPins.get(id) as string, hsmId: id, recordOf })),
  );
  let unfollow = (): void => undefined;
  // The hsm sections change only on restart (src/config/schema.ts): the members are those of the start.
  const fleet = new FleetEngine(
    cfg.hsms.map((h, i) => ({ id: h.id, engine: engines[i] as Pkcs11Engine })),
    {
      breakerFailures: deps.breakerFailures ?? 3,
      probeIntervalMs: deps.probeIntervalMs ?? 1000,
      // A GetHealthStatus that waits for a fresh check has the request's deadline in all. In a fleet, one
      // hung HSM must not make the others' answer late, so each check gets a fifth less; a single HSM
      // that hangs leaves nothing to answer with, and keeps the whole deadline, as it always had.
      checkBudgetMs: cfg.hsms.length > 1 ? Math.max(10, Math.floor(cfg.limits.deadlineMs * 0.8)) : cfg.limits.deadlineMs,
      logger: deps.logger,
      events,
      onClose: () => unfollow(),
    },
  );
  unfollow = events.subscribe('config.reload', (e) => {
    if (!e.ok) return;
    const now = runtime().config;
    records = recordedKeysOf(now);
    fleet.place(keyPlacement(now));
  });
  fleet.place(keyPlacement(cfg));
  return fleet;
}
