#!/usr/bin/env bash
# The test command (README): installs what is missing, builds, runs every jest suite against a
# SoftHSM2 token that the suites create in a temporary directory.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash softhsm/install-deps.sh
bash helm/install-tools.sh >/dev/null
[[ -d node_modules/pkcs11js && -d node_modules/kubernetes-models ]] || npm ci
npm run --silent build
exec npx jest --ci "$@"
