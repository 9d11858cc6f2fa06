// The HSM setup of this run (test/hsm/setups.ts). The suites that exercise the four operations, the
// errors and the HSM faults run on every setup; the others (xks-admin on SoftHSM2, chart, Dockerfile,
// soak, ...) only on SoftHSM2 in process.
const setup = process.env.XKS_TEST_HSM_SETUP ?? 'softhsm';
const EVERY_SETUP = ['xks-api', 'operations', 'errors', 'faults'];

/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: setup === 'softhsm' ? ['**/*.test.ts'] : EVERY_SETUP.map((name) => `**/test/${name}.test.ts`),
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'test/tsconfig.json' }] },
  globalSetup: '<rootDir>/test/support/global-setup.ts',
  globalTeardown: '<rootDir>/test/support/global-teardown.ts',
  testTimeout: 30000,
  reporters: ['default', '<rootDir>/test/support/summary-reporter.js'],
  // Each suite starts its own proxy on an ephemeral port against the shared test token.
  maxWorkers: 2,
};
