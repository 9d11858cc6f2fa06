#!/usr/bin/env bash
# Installs the Debian packages the proxy and its tests need, when they are missing.
set -euo pipefail
need=()
[[ -f /usr/lib/softhsm/libsofthsm2.so ]] || need+=(softhsm2)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
for tool in python3 make g++; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  echo "installing: ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
