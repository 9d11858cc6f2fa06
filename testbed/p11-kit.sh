#!/usr/bin/env bash
# p11-kit >= 0.25 for the remote-HSM test setup (p11-kit server + p11-kit-client.so). Bookworm's 0.24.1
# cannot carry CK_GCM_PARAMS over the wire (CKR_MECHANISM_INVALID); 0.25 can. Builds Debian's trixie
# source package into a private prefix, never over the system's p11-kit, with apt's own client and a
# private source list (the system's apt configuration and state are left as they are).
# Cached: once built, a run only prints the prefix. Prints the prefix on stdout, progress on stderr.
#
# usage: testbed/p11-kit.sh        (XKS_P11KIT_PREFIX overrides where it goes)
set -euo pipefail
log() { echo "p11-kit: $*" >&2; }

if [[ -n ${XKS_P11KIT_PREFIX:-} ]]; then
  prefix=$XKS_P11KIT_PREFIX
elif [[ $(id -u) -eq 0 ]]; then
  prefix=/opt/xks-p11kit
else
  prefix=${XDG_CACHE_HOME:-$HOME/.cache}/xks-proxy/p11kit
fi
built() { [[ -f $prefix/.built && -x $prefix/bin/p11-kit && -f $prefix/lib/pkcs11/p11-kit-client.so ]]; }
if built; then echo "$prefix"; exit 0; fi

mkdir -p "$(dirname "$prefix")"
# Two test runs started at once must not build into the same prefix together.
exec 9>"$prefix.lock"
flock 9
if built; then echo "$prefix"; exit 0; fi

sudo=""
[[ $(id -u) -eq 0 ]] || sudo=sudo
need=()
for tool in gcc make pkg-config xz; do command -v "$tool" >/dev/null || need+=("$tool"); done
need=("${need[@]/xz/xz-utils}")
if ((${#need[@]})); then
  log "installing build tools: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

started=$SECONDS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work" # apt downloads as its unprivileged user where it can

# The Debian mirror this machine already uses for its own release.
. /etc/os-release
mirrors() { apt-get indextargets --format '$(REPO_URI)|$(RELEASE)|$(COMPONENT)' 2>/dev/null | awk -F'|' -v r="$VERSION_CODENAME" '$2 == r && $3 == "main" { print $1 }' | head -n1; }
mirror=$(mirrors)
if [[ -z $mirror ]]; then
  $sudo apt-get update -qq
  mirror=$(mirrors)
fi
[[ -n $mirror ]] || { log "no Debian mirror for $VERSION_CODENAME in the apt configuration"; exit 1; }

suite=trixie
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/src"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" > "$work/sources.list"
apt=(-o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache" -o Debug::NoLocking=1)
log "fetching the $suite source package index"
apt-get -qq "${apt[@]}" update
# The first paragraph is the newest version the index has.
apt-cache "${apt[@]}" showsrc p11-kit | awk '/^$/ { exit } { print }' >"$work/p11-kit.dsc-fields"
version=$(awk '/^Version:/ { print $2 }' "$work/p11-kit.dsc-fields")
upstream=${version%-*}
dpkg --compare-versions "$upstream" ge 0.25 || { log "$suite has p11-kit $version; need 0.25 or later"; exit 1; }

# --download-only: no dpkg-dev needed, and a mirror that lacks the .dsc still serves the tarball, whose
# checksum is then checked against the signed index here.
log "downloading p11-kit $version"
(cd "$work/src" && apt-get -qq "${apt[@]}" source --download-only "p11-kit=$version" >"$work/source.log" 2>&1) || true
orig=p11-kit_$upstream.orig.tar.xz
[[ -f $work/src/$orig ]] || { cat "$work/source.log" >&2; log "download failed: $orig"; exit 1; }
want=$(awk -v n="$orig" '/^Checksums-Sha256:/ { s = 1; next } /^[^ ]/ { s = 0 } s && $3 == n { print $1; exit }' "$work/p11-kit.dsc-fields")
echo "$want  $work/src/$orig" | sha256sum -c --quiet - || { log "checksum mismatch: $orig"; exit 1; }

tar -xJf "$work/src/$orig" -C "$work/src"
src=$work/src/p11-kit-$upstream

# The upstream tarball as Debian ships it. Debian's one patch (36_enable_locale) only turns translations
# on and needs autoreconf, so it is left out. Only what remoting needs: no trust module (libtasn1), no
# libffi closures, no docs, no translations.
log "building into $prefix"
rm -rf "$prefix"
(
  cd "$src"
  ./configure -q --prefix="$prefix" --disable-static --disable-nls --disable-trust-module --without-libtasn1 \
    --without-libffi --without-systemd --without-bash-completion --with-hash-impl=internal
  make -j"$(nproc)"
  make install
) >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; log "build failed"; exit 1; }
echo "$version" >"$prefix/.built"
log "p11-kit $version built in $((SECONDS - started)) s"
echo "$prefix"
