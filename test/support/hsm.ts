import { readFileSync } from 'node:fs';

export const MODULE = process.env.SOFTHSM2_MODULE ?? '/usr/lib/softhsm/libsofthsm2.so';

export interface TestHsm {
  dir: string;
  conf: string;
  pin: string;
  tokenLabel: string;
  knownKeyHex: string;
  transportKeyHex: string;
}

export function testHsm(): TestHsm {
  const file = process.env.XKS_TEST_HSM;
  if (!file) throw new Error('XKS_TEST_HSM is not set: run the suites through jest (globalSetup creates the token)');
  return JSON.parse(readFileSync(file, 'utf8')) as TestHsm;
}
