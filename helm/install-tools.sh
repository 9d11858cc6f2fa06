#!/usr/bin/env bash
# Installs what test/helm-chart.test.ts needs to render and lint the chart.
#
# Helm itself is not packaged by Debian and cannot be downloaded here, so unless a real `helm` is
# already on PATH this installs the Go toolchain and Debian's packaged sources of Helm's template
# libraries (sprig v3, sigs.k8s.io/yaml); the test then builds helm/tools/chart-render from them
# offline (GOPATH mode) and uses it in place of `helm template` / `helm lint`.
set -euo pipefail

if command -v helm >/dev/null 2>&1; then
  echo "helm found: $(helm version --short 2>/dev/null || echo unknown version); nothing to install"
  exit 0
fi

pkgs=(golang-go golang-github-masterminds-sprig-dev golang-k8s-sigs-yaml-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Build once to fail early if the packaged sources do not compile.
root=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
export GOCACHE="${GOCACHE:-${HOME:-/tmp}/.cache/go-build}"
GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off GOFLAGS= GOTOOLCHAIN=local \
  go build -o "$out/chart-render" "$root/tools/chart-render/main.go"
rm -rf "$out"
echo "chart renderer builds with $(go version)"
