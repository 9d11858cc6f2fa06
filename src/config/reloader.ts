import { createHash } from 'node:crypto';
import { FSWatcher, Stats, statSync, unwatchFile, watch, watchFile } from 'node:fs';
import { basename, dirname } from 'node:path';
import { auditRefusal } from '../governance/refusal';
import { ConfigError, loadConfigText, readConfigText, RuntimeConfig } from './load';
import { restartChanges } from './reload-rules';
import type { ProxyEvents } from '../events';
import type { Logger } from '../log';

/** Kubernetes swaps a mounted ConfigMap/Secret by renaming this symlink inside the mount directory. */
const KUBERNETES_SWAP = '..data';
/** Coalesces the burst of events one atomic write (temp file + rename) makes. */
const DEBOUNCE_MS = 20;

/**
 * Re-reads the config file when it or a secret file it names changes, or on demand (SIGHUP). A bad
 * file, or one that changes a setting read only at start (src/config/reload-rules.ts), is refused
 * whole: the proxy keeps its last good config.
 *
 * Directory watches (inotify) make an `xks-admin key disable` effective within milliseconds, so the
 * next request already sees it; polling stays as a fallback for filesystems without change
 * notifications (some network and overlay mounts).
 */
export class ConfigReloader {
  private readonly onPoll = (curr: Stats): void => {
    // The directory watch has usually tried this very version already.
    if (curr.mtimeMs !== this.loadedMtimeMs) this.reload('file changed');
  };
  /** mtime of the config file as of the last reload attempt. */
  private loadedMtimeMs = NaN;
  private readonly dirWatchers = new Map<string, FSWatcher>();
  /** Base names, per directory, whose change means a reload. */
  private watched = new Map<string, Set<string>>();
  private debounce: NodeJS.Timeout | undefined;
  private watching = false;

  constructor(
    private readonly file: string,
    private current: RuntimeConfig,
    private readonly apply: (next: RuntimeConfig) => void,
    private readonly log: Logger,
    /**
     * Every attempt is published as 'config.reload'. Required: the engine takes up an applied reload's key
     * settings (placement, recorded CKA_IDs and check values) from this event alone (src/engine/open-engine.ts).
     */
    private readonly events: ProxyEvents,
  ) {}

  watch(pollIntervalMs = 2000): void {
    this.watching = true;
    watchFile(this.file, { interval: pollIntervalMs, persistent: false }, this.onPoll);
    this.watchDirectories();
  }

  dispose(): void {
    this.watching = false;
    unwatchFile(this.file, this.onPoll);
    for (const w of this.dirWatchers.values()) w.close();
    this.dirWatchers.clear();
    clearTimeout(this.debounce);
  }

  /** The config file and every secret file of the current config, grouped by directory. */
  private filesOfInterest(): Map<string, Set<string>> {
    const files = [this.file];
    for (const ks of this.current.config.keyStores) {
      for (const c of ks.credentials) if ('file' in c.secretAccessKey) files.push(c.secretAccessKey.file);
    }
    const byDir = new Map<string, Set<string>>();
    for (const f of files) {
      const names = byDir.get(dirname(f)) ?? new Set([KUBERNETES_SWAP]);
      names.add(basename(f));
      byDir.set(dirname(f), names);
    }
    return byDir;
  }

  private watchDirectories(): void {
    this.watched = this.filesOfInterest();
    for (const dir of this.watched.keys()) {
      if (this.dirWatchers.has(dir)) continue;
      try {
        const w = watch(dir, { persistent: false }, (_event, name) => {
          // Unrelated files (an audit log beside the config, say) must not cause reloads.
          if (name === null || this.watched.get(dir)?.has(name.toString())) this.schedule();
        });
        w.on('error', () => this.dirWatchers.delete(dir));
        this.dirWatchers.set(dir, w);
      } catch (e) {
        this.log.warn({ dir, err: (e as Error).message }, 'cannot watch directory; relying on polling');
      }
    }
  }

  private schedule(): void {
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => this.reload('file changed'), DEBOUNCE_MS);
    this.debounce.unref();
  }

  /**
   * Applies the file if it is valid and changes no restart-only setting; otherwise refuses it whole and
   * keeps the running configuration. A refusal is published (and counted) once per file content and
   * reason: the directory watch, the poll and a SIGHUP that all meet one bad edit count it once.
   */
  reload(reason: string): boolean {
    let next: RuntimeConfig;
    let text = '';
    this.loadedMtimeMs = statSync(this.file, { throwIfNoEntry: false })?.mtimeMs ?? NaN;
    try {
      text = readConfigText(this.file);
      next = loadConfigText(text, this.file);
    } catch (e) {
      const governance = (e as ConfigError).governance;
      if (!this.firstRefusal(text, (e as Error).message)) return false;
      this.log.error({ reason, err: (e as Error).message }, 'configuration reload refused; keeping the previous configuration');
      this.events.publish('config.reload', { ok: false });
      if (governance) {
        this.events.publish('governance.refusal', governance);
        auditRefusal(this.current.config, { ...governance, message: (e as Error).message });
      }
      return false;
    }
    const restartRequired = restartChanges(this.current.config, next.config);
    if (restartRequired.length > 0) {
      if (!this.firstRefusal(text, restartRequired.join())) return false;
      this.log.warn(
        { reason, restartRequired },
        `configuration reload refused: ${restartRequired.join(', ')} change${restartRequired.length > 1 ? '' : 's'} only on restart; nothing of the new file was applied: restart to apply it, or revert ${restartRequired.length > 1 ? 'these settings' : 'it'}`,
      );
      this.events.publish('config.reload', { ok: false, restartRequired });
      return false;
    }
    this.refused = undefined;
    this.current = next;
    this.apply(next);
    this.events.publish('config.reload', { ok: true });
    // A credential added in a new directory is watched from now on.
    if (this.watching) this.watchDirectories();
    this.log.info({ reason, keyStores: next.keyStores.size }, 'configuration reloaded');
    return true;
  }

  /** What the last refusal refused (file content and why); cleared by a successful reload. */
  private refused: string | undefined;

  private firstRefusal(text: string, why: string): boolean {
    const id = `${createHash('sha256').update(text).digest('hex')} ${why}`;
    if (id === this.refused) {
      this.log.info('configuration unchanged since its last refusal; still refused, not counted again');
      return false;
    }
    this.refused = id;
    return true;
  }
}
