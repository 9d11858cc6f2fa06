#!/usr/bin/env bash
# Installs the Debian packages the proxy and its tests need, when they are missing.
set -euo pipefail
. "$(dirname "$0")/apt.sh"
need=()
[[ -f /usr/lib/softhsm/libsofthsm2.so ]] || need+=(softhsm2)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
for tool in python3 make g++; do command -v "$tool" >/dev/null || need+=("$tool"); done
install_missing "${need[@]}"
