/**
 * The proxy as the soak run starts it: the production process (runProcess: app, config reload, signals)
 * on a config file, with the PKCS#11 module wrapped for fault injection (commands arrive over IPC from
 * bench/soak.ts).
 */
import { loadConfigFile } from '../src/config/load';
import { createLogger } from '../src/log';
import { runProcess } from '../src/process';
import { faultyModule } from '../src/testing/faulty-module';

async function main(): Promise<void> {
  const file = process.argv[process.argv.indexOf('--config') + 1] as string;
  const log = createLogger(process.env.XKS_LOG_LEVEL ?? 'warn');
  const runtime = loadConfigFile(file);
  const { faults, create } = faultyModule();
  const { app } = await runProcess({ file, runtime, logger: log, createModule: create });
  // runProcess's SIGHUP listener was added first and reloads synchronously: this one answers after it.
  process.on('SIGHUP', () => process.send?.({ type: 'reloaded' }));
  process.on('message', (m: { type: string; fail?: Record<string, string>; delayMs?: number }) => {
    if (m.type === 'fault') {
      faults.fail = m.fail ?? {};
      faults.delayMs = m.delayMs ?? 0;
    }
  });
  process.send?.({ type: 'ready', port: app.port });
}

void main().catch((e) => {
  console.error((e as Error).message);
  process.exit(1);
});
