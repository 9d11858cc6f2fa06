import { AppOptions, ProxyApp } from './app';
import { ConfigReloader } from './config/reloader';
import { watchProtectionGaps } from './governance/coverage';
import { pinWarning } from './governance/quorum';
import { UsageRecorder } from './governance/usage';
import { watchGovernedStates } from './governance/watch';

export interface ProcessOptions extends AppOptions {
  /** The config file the runtime came from; it is watched and re-read on change and on SIGHUP. */
  file: string;
}

/**
 * One serving process, as production (src/main.ts) and the soak run (bench/soak-proxy.ts) start it:
 * the app, config hot reload (published as 'config.reload' on the app's bus), SIGHUP to reload,
 * SIGTERM/SIGINT to stop gracefully and exit.
 */
export async function runProcess(opts: ProcessOptions): Promise<{ app: ProxyApp; reloader: ConfigReloader }> {
  const log = opts.logger;
  const app = await ProxyApp.start(opts);
  const reloader = new ConfigReloader(opts.file, opts.runtime, (next) => app.setRuntime(next), log, app.events);
  reloader.watch();
  // Counted in the HSM whatever the config says, so that no edit of it can hide how much a key was used.
  const usage = new UsageRecorder(app.events, () => app.runtime, { dir: opts.runtime.config.governance.usageDir, registry: app.metrics.registry, logger: log });
  // A governed change that never reaches this process (its file swapped back unread) shows as states behind.
  const governed = watchGovernedStates(app.events, () => app.runtime, log);
  const pinned = pinWarning(process.env);
  if (pinned) log.warn(pinned);
  // After an upgrade: what protected groups still leave outside their quorum (xks_governance_unprotected).
  const gaps = watchProtectionGaps(app.events, () => app.runtime, log);
  process.on('SIGHUP', () => reloader.reload('SIGHUP'));
  const stop = (signal: string): void => {
    log.info({ signal }, 'stopping');
    reloader.dispose();
    governed.stop();
    gaps();
    app.stop().then(
      () => {
        // After the drain, so that its encryptions are counted, and its HSM calls delay no request.
        usage.dispose();
        process.exit(0);
      },
      (e) => {
        log.error({ err: (e as Error).message }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  return { app, reloader };
}
