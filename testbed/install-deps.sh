#!/usr/bin/env bash
# What the NSS, p11-kit and vendor-emulation test setups need beyond softhsm/install-deps.sh: NSS softoken
# and certutil, gcc and p11-kit's pkcs11.h for testbed/vendor-emu.c (Debian packages, when missing),
# and p11-kit >= 0.25 in a private prefix (built once, then cached).
set -euo pipefail
. "$(dirname "$0")/../softhsm/apt.sh"
here=$(cd "$(dirname "$0")" && pwd)
need=()
/sbin/ldconfig -p | grep "libsoftokn3\.so " >/dev/null || need+=(libnss3)
command -v certutil >/dev/null || need+=(libnss3-tools)
command -v gcc >/dev/null || need+=(gcc)
[[ -f /usr/include/p11-kit-1/p11-kit/pkcs11.h ]] || need+=(libp11-kit-dev)
install_missing "${need[@]}"
bash "$here/p11-kit.sh" >/dev/null
bash "$here/vendor-emu.sh" >/dev/null
