/**
 * The proxy as the soak run starts it: the real ProxyApp on a config file, with the PKCS#11 module
 * wrapped for fault injection (commands arrive over IPC from bench/soak.ts). SIGHUP reloads the
 * config, SIGTERM stops gracefully, as in the production entry point.
 */
import { ProxyApp } from '../src/app';
import { loadConfigFile } from '../src/config/load';
import { ConfigReloader } from '../src/config/reloader';
import { createLogger } from '../src/log';
import { faultyModule } from '../src/testing/faulty-module';

async function main(): Promise<void> {
  const file = process.argv[process.argv.indexOf('--config') + 1] as string;
  const log = createLogger(process.env.XKS_LOG_LEVEL ?? 'warn');
  const runtime = loadConfigFile(file);
  const { faults, create } = faultyModule();
  const app = await ProxyApp.start({ runtime, logger: log, createModule: create });
  const reloader = new ConfigReloader(file, runtime, (next) => app.setRuntime(next), log);
  process.on('SIGHUP', () => {
    reloader.reload('SIGHUP');
    process.send?.({ type: 'reloaded' });
  });
  process.on('message', (m: { type: string; fail?: Record<string, string>; delayMs?: number }) => {
    if (m.type === 'fault') {
      faults.fail = m.fail ?? {};
      faults.delayMs = m.delayMs ?? 0;
    }
  });
  process.once('SIGTERM', () => {
    void app.stop(10_000).then(() => process.exit(0));
  });
  process.send?.({ type: 'ready', port: app.port });
}

void main().catch((e) => {
  console.error((e as Error).message);
  process.exit(1);
});
