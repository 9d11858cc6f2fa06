import { watchFile, unwatchFile } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { loadConfigFile, RuntimeConfig } from './load';
import type { Logger } from '../log';

/**
 * Re-reads the config file when it changes (polling, which also sees Kubernetes ConfigMap symlink
 * swaps) or on demand (SIGHUP). A bad file is refused whole: the proxy keeps its last good config.
 */
export class ConfigReloader {
  private readonly onChange = (): void => {
    this.reload('file changed');
  };

  constructor(
    private readonly file: string,
    private current: RuntimeConfig,
    private readonly apply: (next: RuntimeConfig) => void,
    private readonly log: Logger,
    private readonly report?: (ok: boolean) => void,
  ) {}

  watch(intervalMs = 2000): void {
    watchFile(this.file, { interval: intervalMs, persistent: false }, this.onChange);
  }

  dispose(): void {
    unwatchFile(this.file, this.onChange);
  }

  reload(reason: string): boolean {
    let next: RuntimeConfig;
    try {
      next = loadConfigFile(this.file);
    } catch (e) {
      this.log.error({ reason, err: (e as Error).message }, 'configuration reload refused; keeping the previous configuration');
      this.report?.(false);
      return false;
    }
    const restartOnly = (['server', 'ops', 'hsm', 'limits'] as const).filter((k) => !isDeepStrictEqual(next.config[k], this.current.config[k]));
    if (restartOnly.length > 0) {
      this.log.warn({ sections: restartOnly }, 'these configuration sections change only on restart');
    }
    this.current = next;
    this.apply(next);
    this.report?.(true);
    this.log.info({ reason, keyStores: next.keyStores.size }, 'configuration reloaded');
    return true;
  }
}
