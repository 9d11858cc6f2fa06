// Prints one plain "N passed, N failed" line after jest's own summary, for CI readers that do not parse
// jest, preceded by what was skipped and why (never silent).
const { skippedLines } = require('./skipped');

class SummaryReporter {
  constructor(globalConfig) {
    this.root = globalConfig.rootDir;
  }

  onRunComplete(_contexts, results) {
    for (const line of skippedLines(results.testResults, this.root)) console.log(`skipped: ${line}`);
    const skipped = results.numPendingTests + results.numTodoTests;
    const failed = results.numFailedTests + results.numRuntimeErrorTestSuites;
    console.log(`jest: ${results.numPassedTests} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  }
}
module.exports = SummaryReporter;
