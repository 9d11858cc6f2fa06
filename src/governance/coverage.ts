import type { RuntimeConfig } from '../config/load';
import type { ProxyConfig } from '../config/schema';
import type { ProxyEvents } from '../events';
import type { Logger } from '../log';
import { identityRecorded } from './state';

/**
 * What of the quorum-protected groups is not yet under their quorum, in a deployment upgraded from a release that
 * recorded neither: key versions without a check value (a token of a config writer's holding keys under their
 * labels and CKA_IDs would be used), and key stores reaching them whose identity is not recorded (a config writer
 * can add a credential to them, change a secret, re-enable them). A governed change records them (README
 * "Governance", upgrade).
 */
export interface ProtectionGaps {
  /** `key "K" (group "G") version N`. */
  uncheckedKeyVersions: string[];
  /** Key store names. */
  unrecordedKeyStores: string[];
}

export function protectionGaps(config: ProxyConfig): ProtectionGaps {
  const protectedGroups = config.groups.filter((g) => g.quorum);
  const names = new Set(protectedGroups.map((g) => g.name));
  return {
    uncheckedKeyVersions: protectedGroups.flatMap((g) =>
      g.keys.flatMap((k) => (k.versions ?? [{ version: 1, checkValue: undefined }]).filter((v) => v.checkValue === undefined).map((v) => `key "${k.id}" (group "${g.name}") version ${v.version}`)),
    ),
    unrecordedKeyStores: config.keyStores.filter((ks) => ks.groups.some((g) => names.has(g)) && !identityRecorded(ks)).map((ks) => ks.name),
  };
}

/** The warning for the log, undefined when nothing is missing. */
function gapsWarning(gaps: ProtectionGaps): string | undefined {
  const parts: string[] = [];
  if (gaps.uncheckedKeyVersions.length > 0) {
    parts.push(`${gaps.uncheckedKeyVersions.length} key version(s) of quorum-protected groups have no check value, so another token holding keys under their labels would be used (xks-admin change propose --as NAME key check-values)`);
  }
  if (gaps.unrecordedKeyStores.length > 0) {
    parts.push(`key store(s) ${gaps.unrecordedKeyStores.map((n) => `"${n}"`).join(', ')} reach quorum-protected groups without their identity recorded, so their credentials, status and prefix change without the quorum (xks-admin change propose --as NAME key-store record KS)`);
  }
  return parts.length > 0 ? parts.join('; ') : undefined;
}

/** Warns at start, and after each reload that changes what is missing (xks_governance_unprotected has the counts). */
export function watchProtectionGaps(events: ProxyEvents, runtime: () => RuntimeConfig, logger: Logger): () => void {
  let said: string | undefined;
  const check = (): void => {
    const gaps = protectionGaps(runtime().config);
    const warning = gapsWarning(gaps);
    if (warning !== undefined && warning !== said) logger.warn({ uncheckedKeyVersions: gaps.uncheckedKeyVersions, unrecordedKeyStores: gaps.unrecordedKeyStores }, warning);
    said = warning;
  };
  check();
  return events.subscribe('config.reload', (e) => {
    if (e.ok) check();
  });
}
