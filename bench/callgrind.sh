#!/usr/bin/env bash
# Instructions per request through the proxy's handler, the floor (bench/lib/floor.ts: the must-haves
# alone) and the bare node:http handler, counted by valgrind's callgrind on the main thread: a figure
# other load on the machine cannot move. Not an exact one: when V8's compiler threads finish relative to
# the counted window varies, so the same build moves by about ±10% (bench/README.md). Runs
# bench/stage-costs.js --only e2e|floor|bare under callgrind with two request counts and divides the
# difference (setup, warm-up and exit cancel out). About 3 minutes per target on the 2-core VM.
#   npm run build:bench && bash bench/callgrind.sh [e2e|floor|bare|all] [low high]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
which=${1:-all}
low=${2:-1000}
high=${3:-3000}
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count() { # target requests -> main-thread instructions
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/cg.$1.$2" node "$root/dist-bench/bench/stage-costs.js" --only "$1" --requests "$2" >"$out/log.$1.$2" 2>&1 ||
    { tail -20 "$out/log.$1.$2" >&2; exit 1; }
  grep -q '"statuses":{"200":' "$out/log.$1.$2" || { echo "callgrind.sh: $1 answered other than 200:" >&2; grep statuses "$out/log.$1.$2" >&2; exit 1; }
  # Thread 1 is the main thread: V8's compiler and GC threads are left out (their share varies run to run).
  sed -n 's/^summary: *//p' "$out/cg.$1.$2-01"
}
targets=(e2e floor bare)
[[ $which == all ]] || targets=("$which")
for t in "${targets[@]}"; do
  # The two counts side by side (each is one thread under valgrind): instruction counts do not depend on it.
  count "$t" "$high" >"$out/n.$t.high" &
  count "$t" "$low" >"$out/n.$t.low"
  wait $!
  a=$(cat "$out/n.$t.low")
  b=$(cat "$out/n.$t.high")
  echo "$t: $(( (b - a) / (high - low) )) main-thread instructions per request ($low: $a, $high: $b)"
done
