/**
 * The proxy as the soak run starts it: the production process (runProcess: app, config reload, signals)
 * on a config file, with the PKCS#11 module wrapped for fault injection (commands arrive over IPC from
 * bench/soak.ts): calls made slow or failing on every HSM, or one HSM of the fleet lost by its token label.
 */
import { loadConfigFile } from '../src/config/load';
import { createLogger } from '../src/log';
import { runProcess } from '../src/process';
import { findTokenSlot } from '../src/engine/module';
import { faultyModule, slotLoss } from '../testbed/faulty-module';

async function main(): Promise<void> {
  const file = process.argv[process.argv.indexOf('--config') + 1] as string;
  const log = createLogger(process.env.XKS_LOG_LEVEL ?? 'warn');
  const runtime = loadConfigFile(file);
  const { faults, create } = faultyModule();
  const lose = slotLoss(faults);
  const { app } = await runProcess({ file, runtime, logger: log, createModule: create });
  // runProcess's SIGHUP listener was added first and reloads synchronously: this one answers after it.
  process.on('SIGHUP', () => process.send?.({ type: 'reloaded' }));
  process.on('message', (m: { type: string; fail?: Record<string, string>; delayMs?: number; tokenLabel?: string }) => {
    if (m.type === 'fault') {
      faults.fail = m.fail ?? {};
      faults.delayMs = m.delayMs ?? 0;
    } else if (m.type === 'lose') {
      const slot = m.tokenLabel === undefined ? undefined : findTokenSlot(faults.real!, m.tokenLabel);
      // A loss that silently lost nothing would pass the soak's check without testing it.
      if (m.tokenLabel !== undefined && !slot) throw new Error(`soak: no token "${m.tokenLabel}" to lose`);
      lose(slot);
    }
  });
  process.send?.({ type: 'ready', port: app.port });
}

void main().catch((e) => {
  console.error((e as Error).message);
  process.exit(1);
});
