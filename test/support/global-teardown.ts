import { copyFileSync, existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { stopSetup, type HsmSetup } from '../../testbed/hsm-setups';

export default async function globalTeardown(): Promise<void> {
  const file = process.env.XKS_TEST_HSM;
  if (!file) return;
  if (existsSync(file)) {
    const setup = JSON.parse(readFileSync(file, 'utf8')) as HsmSetup;
    stopSetup(setup);
    // The remote module's own complaints (p11-kit server and its per-client children) outlive the run.
    if (setup.serverLog && existsSync(setup.serverLog) && statSync(setup.serverLog).size > 0) {
      const kept = join(tmpdir(), 'xks-test-p11-kit-server.log');
      copyFileSync(setup.serverLog, kept);
      console.log(`p11-kit server log: ${kept}`);
    }
  }
  if (!process.env.XKS_TEST_KEEP) rmSync(dirname(file), { recursive: true, force: true });
}
