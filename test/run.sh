#!/usr/bin/env bash
# The test command (README): installs what is missing and runs the jest suites once per HSM setup
# (testbed/hsm-setups.ts): every suite on SoftHSM2 in process; the suites of the four operations, the
# errors and the HSM faults also on NSS softoken, on SoftHSM2 behind p11-kit remoting, and on the
# emulated vendors (cloudhsm luna-fips nshield ha-flaky: testbed/vendor-emu.c) (jest.config.js chooses).
# Each jest run first builds dist/ and dist-bench/ from the current source (its global setup).
# XKS_TEST_HSM_SETUPS="softhsm p11kit" runs a subset; arguments go to jest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash softhsm/install-deps.sh
bash testbed/install-deps.sh
bash helm/install-tools.sh >/dev/null
# node_modules missing or older than the lockfile: install it as CI does.
[[ node_modules/.package-lock.json -nt package-lock.json ]] || npm ci
# The pkcs11js patch applied and the built binary checked on SoftHSM2 (quick when already so).
npm run --silent postinstall

results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
failed=()
# Static checks (`npm run lint`: tsc over the tests too, ESLint, knip), each run whatever the others found.
# A finding fails the run, after the suites.
for check in types eslint knip; do
  echo "=== lint:$check" >&2
  npm run --silent "lint:$check" || failed+=("lint:$check")
done
# Arguments may select suites that a setup does not run: that is no failure there.
more=()
(($#)) && more=(--passWithNoTests)
runs=()
all_setups="softhsm p11kit nss cloudhsm luna-fips nshield ha-flaky"
chosen=${XKS_TEST_HSM_SETUPS:-$all_setups}
not_run=()
for setup in $all_setups; do [[ " $chosen " == *" $setup "* ]] || not_run+=("$setup"); done
for setup in $chosen; do
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
node test/support/run-summary.js "$results" "${runs[*]}" "${not_run[*]:-}"
if ((${#failed[@]})); then
  echo "failed on: ${failed[*]}" >&2
  exit 1
fi
