// The closing summary of test/run.sh: one line per jest run (HSM setup), what each skipped and why, the
// setups that did not run, then the total as one plain "total: N passed, N failed, N skipped" line (CI
// reads that last line as the run's count, so the names stand just above it).
// Usage: node test/support/run-summary.js RESULTS_DIR "RUNS..." "SETUPS NOT RUN..."
'use strict';
const { existsSync, readFileSync } = require('node:fs');
const { join } = require('node:path');
const { skippedLines } = require('./skipped');

const [dir, runs, notRun] = process.argv.slice(2);
const root = join(__dirname, '..', '..');
const total = { passed: 0, failed: 0, skipped: 0 };
const named = [];
for (const run of runs.split(/\s+/).filter(Boolean)) {
  const file = join(dir, `${run}.json`);
  if (!existsSync(file)) {
    total.failed += 1;
    console.log(`${run}: 0 passed, 1 failed (no results: the run did not start)`);
    continue;
  }
  const r = JSON.parse(readFileSync(file, 'utf8'));
  const counts = { passed: r.numPassedTests, failed: r.numFailedTests + r.numRuntimeErrorTestSuites, skipped: r.numPendingTests + r.numTodoTests };
  for (const k of Object.keys(total)) total[k] += counts[k];
  console.log(`${run}: ${counts.passed} passed, ${counts.failed} failed${counts.skipped ? `, ${counts.skipped} skipped` : ''}`);
  for (const line of skippedLines(r.testResults, root)) named.push(`skipped on ${run}: ${line}`);
}
for (const setup of (notRun ?? '').split(/\s+/).filter(Boolean)) named.push(`skipped setup: ${setup} (not in XKS_TEST_HSM_SETUPS)`);
for (const line of named) console.log(line);
console.log(`total: ${total.passed} passed, ${total.failed} failed${total.skipped ? `, ${total.skipped} skipped` : ''}`);
