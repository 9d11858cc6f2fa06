#!/usr/bin/env bash
# Builds the vendor-emulation PKCS#11 module (testbed/vendor-emu.c: SoftHSM2 underneath, one network
# HSM's behaviour on top) with gcc against p11-kit's pkcs11.h (Debian libp11-kit-dev, installed by
# testbed/install-deps.sh), and one copy per profile beside it (libxks-vendor-emu-PROFILE.so): dlopen
# shares one library per file, so profiles used at once in one process (the bench) need a file each.
# Cached by the source's hash, so a run only prints the path after the first.
# Prints the module's path on stdout.
#
# usage: testbed/vendor-emu.sh        (XKS_VENDOR_EMU_DIR overrides the cache directory)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target=${SOFTHSM2_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
hash=$( (cat "$here/vendor-emu.c"; echo "$target") | sha256sum | cut -c1-16)
dir=${XKS_VENDOR_EMU_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/xks-proxy/vendor-emu}/$hash
module=$dir/libxks-vendor-emu.so
if [[ ! -f $module ]]; then
  mkdir -p "$dir"
  cflags=$(pkg-config --cflags p11-kit-1 2>/dev/null || echo -I/usr/include/p11-kit-1)
  # Built beside and renamed: two runs at once never load a half-written file.
  tmp=$(mktemp "$dir/.build.XXXXXX")
  # shellcheck disable=SC2086 # cflags is a list of flags
  gcc -std=c11 -O2 -Wall -Wextra -Werror -shared -fPIC $cflags -DEMU_TARGET="\"$target\"" -o "$tmp" "$here/vendor-emu.c" -ldl -lpthread
  chmod 755 "$tmp"
  for profile in cloudhsm luna-fips nshield ha-flaky; do
    copy=$(mktemp "$dir/.copy.XXXXXX")
    cp "$tmp" "$copy"
    mv -f "$copy" "$dir/libxks-vendor-emu-$profile.so"
  done
  mv -f "$tmp" "$module"
fi
echo "$module"
