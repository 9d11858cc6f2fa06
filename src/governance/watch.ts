import type { RuntimeConfig } from '../config/load';
import type { ProxyEvents } from '../events';
import type { Logger } from '../log';
import { statesBehind } from './high-water';

/**
 * Compares, every `intervalMs`, the quorum-protected states this process runs with the newest the HSMs accepted,
 * and publishes how many are behind ('governance.behind': xks_governance_states_behind). A reload refuses an old
 * file, but a process that never sees the approved one (the writer put the old ConfigMap back before the kubelet
 * synced it) has nothing to refuse: this is how that shows. Behind for a minute is normal while a new config is
 * being rolled out; the alert waits longer.
 */
export function watchGovernedStates(events: ProxyEvents, runtime: () => RuntimeConfig, logger: Logger, intervalMs = 60_000): { check(): void; stop(): void } {
  let said = '';
  const check = (): void => {
    const behind = statesBehind(runtime().config);
    if (behind === undefined) return;
    events.publish('governance.behind', { groups: behind.length });
    const now = behind.map((b) => `${b.group}:${b.running}<${b.newest}`).join(' ');
    if (now && now !== said) {
      logger.warn(
        { behind },
        `this proxy runs quorum-protected state(s) older than the newest the HSMs accepted (${behind.map((b) => `group "${b.group}" epoch ${b.running}, newest ${b.newest}`).join('; ')}): an approved change has not reached it; give it the newest config`,
      );
    }
    said = now;
  };
  const timer = setInterval(check, intervalMs);
  timer.unref();
  return { check, stop: () => clearInterval(timer) };
}
