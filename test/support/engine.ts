import type { HsmConfig } from '../../src/engine/module';
import { EngineDeps, Pkcs11Engine } from '../../src/engine/pkcs11-engine';
import { ProxyEvents, ProxyEventMap } from '../../src/events';
import { silentLogger } from '../../src/log';
import { faultyModule } from '../../testbed/faulty-module';

/** An hsm config section with the schema's defaults, for suites that drive the engine without a proxy. */
export function hsmConfig(over: Partial<HsmConfig> & Pick<HsmConfig, 'modulePath' | 'tokenLabel'>): HsmConfig {
  return {
    environment: {},
    pin: { value: 'unused: the engine takes the resolved PIN' },
    sessionPoolSize: 2,
    gcmParams: 'v240',
    asyncCalls: true,
    healthKeyLabel: 'health-key',
    healthCacheMs: 10_000,
    keyCheckCacheMs: 1000,
    reconnectBackoffMs: 50,
    ...over,
  };
}

/** An engine over a real module wrapped for call counting, with the hsm.state events it published. */
export async function openEngine(hsm: HsmConfig, pin: string, deps: Partial<EngineDeps> = {}) {
  const { faults, create } = faultyModule();
  const events = new ProxyEvents();
  const states: ProxyEventMap['hsm.state'][] = [];
  events.subscribe('hsm.state', (m) => states.push(m));
  const engine = await Pkcs11Engine.open(hsm, { pin, maxQueue: 8, logger: silentLogger, createModule: create, events, ...deps });
  return { engine, faults, states, events };
}

/** The EngineError kind a promise rejects with (or 'resolved'). */
export async function kindOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'resolved';
  } catch (e) {
    return (e as { kind?: string }).kind ?? `not an EngineError: ${String(e)}`;
  }
}
