import { readFileSync } from 'node:fs';
import type { HsmSetup } from '../../testbed/hsm-setups';

export { SOFTHSM_MODULE as MODULE } from '../../testbed/hsm-setups';

/** The token this run uses (testbed/hsm-setups.ts, chosen by XKS_TEST_HSM_SETUP) and the key values the tests know. */
export interface TestHsm extends HsmSetup {
  knownKeyHex: string;
  transportKeyHex: string;
}

export function testHsm(): TestHsm {
  const file = process.env.XKS_TEST_HSM;
  if (!file) throw new Error('XKS_TEST_HSM is not set: run the suites through jest (globalSetup creates the token)');
  return JSON.parse(readFileSync(file, 'utf8')) as TestHsm;
}
