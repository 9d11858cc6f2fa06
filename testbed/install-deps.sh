#!/usr/bin/env bash
# What the NSS and p11-kit test setups need beyond softhsm/install-deps.sh: NSS softoken and certutil
# (Debian packages, when missing) and p11-kit >= 0.25 in a private prefix (built once, then cached).
set -euo pipefail
. "$(dirname "$0")/../softhsm/apt.sh"
here=$(cd "$(dirname "$0")" && pwd)
need=()
/sbin/ldconfig -p | grep "libsoftokn3\.so " >/dev/null || need+=(libnss3)
command -v certutil >/dev/null || need+=(libnss3-tools)
install_missing "${need[@]}"
bash "$here/p11-kit.sh" >/dev/null
