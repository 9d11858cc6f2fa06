#!/usr/bin/env bash
# The test command (README): installs what is missing, builds, runs every jest suite against a
# SoftHSM2 token that the suites create in a temporary directory.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash softhsm/install-deps.sh
[[ -d node_modules/pkcs11js ]] || npm ci
npm run --silent build
results=$(mktemp)
status=0
npx jest --ci --json --outputFile="$results" "$@" || status=$?
# A plain summary line that any CI reader understands.
node -e "const r=require(process.argv[1]); console.log('jest: ' + r.numPassedTests + ' passed, ' + r.numFailedTests + ' failed' + (r.numPendingTests ? ', ' + r.numPendingTests + ' skipped' : ''))" "$results" || true
rm -f "$results"
exit "$status"
