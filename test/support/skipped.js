// What a jest run skipped, one line per reason, for the run's summary (summary-reporter.js, test/run.sh):
// a suite that cannot run on this machine says why in its title (suites.ts: "[skipped: ...]"); any other
// skipped test is named by its outermost describe, or its own title. Takes jest's per-file results in
// either shape: a reporter's (testFilePath, testResults) or --json's (name, assertionResults).
'use strict';
const { relative } = require('node:path');

const SKIPPED = new Set(['pending', 'skipped', 'todo', 'disabled']);

function skippedLines(fileResults, root) {
  const counts = new Map();
  for (const file of fileResults) {
    const path = relative(root, file.testFilePath ?? file.name);
    for (const test of file.testResults ?? file.assertionResults ?? []) {
      if (!SKIPPED.has(test.status)) continue;
      const titles = [...test.ancestorTitles, test.title];
      const what = `${path}: ${titles.find((t) => t.includes('[skipped:')) ?? titles[0]}`;
      counts.set(what, (counts.get(what) ?? 0) + 1);
    }
  }
  return [...counts].map(([what, n]) => (n > 1 ? `${what} (${n} tests)` : what));
}

module.exports = { skippedLines };
