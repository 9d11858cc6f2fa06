// The HSM setup of this run (testbed/hsm-setups.ts). The suites that exercise the four operations, the
// errors and the HSM faults run on every setup; the others (xks-admin on SoftHSM2, chart, Dockerfile,
// soak, ...) only on SoftHSM2 in process.
const setup = process.env.XKS_TEST_HSM_SETUP ?? 'softhsm';
const EVERY_SETUP = ['xks-api', 'operations', 'errors', 'faults'];
// Suites that load the machine on purpose (floods, soak with timing checks): they run on their own,
// one at a time, after the rest (test/run.sh sets XKS_TEST_LOAD=1), so that neither they nor the
// suites beside them judge latency on a box the other is saturating.
const LOAD = ['soak', 'overload', 'bench-overload'];
const load = process.env.XKS_TEST_LOAD === '1';
const suites = (names) => names.map((name) => `**/test/${name}.test.ts`);

/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  // test/: the product's suites; bench/test/: the bench's own (its bookkeeping, and the soak run).
  roots: ['<rootDir>/test', '<rootDir>/bench'],
  testMatch: load ? suites(LOAD) : setup === 'softhsm' ? ['**/*.test.ts'] : suites(EVERY_SETUP),
  testPathIgnorePatterns: load ? ['/node_modules/'] : ['/node_modules/', ...LOAD.map((name) => `/test/${name}\\.test\\.ts$`)],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'test/tsconfig.json' }] },
  globalSetup: '<rootDir>/test/support/global-setup.ts',
  globalTeardown: '<rootDir>/test/support/global-teardown.ts',
  testTimeout: 30000,
  reporters: ['default', '<rootDir>/test/support/summary-reporter.js'],
  // Each suite starts its own proxy on an ephemeral port against the shared test token.
  maxWorkers: 2,
};
