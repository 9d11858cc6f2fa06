/**
 * `describe` for a suite that needs something a machine may lack: `missing` says what is absent, or is
 * undefined when all is there. A skipped suite carries the reason in its title, and the run's summary
 * names it (test/support/skipped.js); in CI, where test/run.sh installs everything the suites need, an
 * absence is a broken install and fails the suite instead of skipping it.
 */
export function describeWhenPresent(missing: string | undefined): (name: string, fn: () => void) => void {
  if (missing === undefined) return describe;
  if (process.env.CI) throw new Error(`missing in CI, where test/run.sh installs it: ${missing}`);
  return (name, fn) => describe.skip(`${name} [skipped: ${missing}]`, fn);
}
