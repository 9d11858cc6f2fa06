#!/usr/bin/env bash
# The test command (README): installs what is missing, builds, and runs the jest suites once per HSM
# setup (test/hsm/setups.ts): every suite on SoftHSM2 in process; the suites of the four operations,
# the errors and the HSM faults also on NSS softoken, on SoftHSM2 behind p11-kit remoting, and on the
# emulated vendors (cloudhsm luna-fips nshield ha-flaky: test/hsm/vendor-emu.c) (jest.config.js
# chooses). XKS_TEST_HSM_SETUPS="softhsm p11kit" runs a subset; arguments go to jest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash softhsm/install-deps.sh
bash test/hsm/install-deps.sh
bash helm/install-tools.sh >/dev/null
[[ -d node_modules/pkcs11js && -d node_modules/kubernetes-models ]] || npm ci
npm run --silent build

results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
failed=()
# Arguments may select suites that a setup does not run: that is no failure there.
more=()
(($#)) && more=(--passWithNoTests)
runs=()
for setup in ${XKS_TEST_HSM_SETUPS:-softhsm p11kit nss cloudhsm luna-fips nshield ha-flaky}; do
  echo "=== HSM setup: $setup" >&2
  XKS_TEST_HSM_SETUP=$setup npx jest --ci --json --outputFile="$results/$setup.json" "${more[@]}" "$@" || failed+=("$setup")
  runs+=("$setup")
  if [[ $setup == softhsm ]]; then
    # The suites that load the machine on purpose, alone and one at a time (jest.config.js).
    echo "=== HSM setup: softhsm, load suites" >&2
    XKS_TEST_LOAD=1 XKS_TEST_HSM_SETUP=softhsm npx jest --ci --runInBand --passWithNoTests --json --outputFile="$results/softhsm-load.json" "$@" || failed+=("softhsm-load")
    runs+=("softhsm-load")
  fi
done
node -e '
  const { existsSync, readFileSync } = require("node:fs");
  const [dir, ...setups] = process.argv.slice(1);
  let passed = 0, failed = 0;
  for (const setup of setups) {
    const file = `${dir}/${setup}.json`;
    const r = existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : { numPassedTests: 0, numFailedTests: 1 };
    passed += r.numPassedTests;
    failed += r.numFailedTests;
    console.log(`${setup}: ${r.numPassedTests} passed, ${r.numFailedTests} failed${existsSync(file) ? "" : " (no results: the run did not start)"}`);
  }
  console.log(`total: ${passed} passed, ${failed} failed`);
' "$results" "${runs[@]}"
if ((${#failed[@]})); then
  echo "failed on: ${failed[*]}" >&2
  exit 1
fi
