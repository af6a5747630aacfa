#!/usr/bin/env bash
# The overload curve of issue 15: the paper's scenario at 100, 1,000, 5,000 and 10,000
# users, spawn rate 50, over REST and over GraphQL, each on a fresh stack (the balancer,
# two release replicas, a new SQLite file), then the curve of goodput and p99 against
# users, with the knee and the goals past it (docs/BENCHMARKS.md, "Overload").
#
#   loadtest/overload.sh [--users "100 1000 5000 10000"] [--apis "rest graphql"] [--out DIR]
#
# Each run lasts its ramp (users / 50 s) plus 60 s at full load, and at least 150 s:
# about 25 minutes in all. The curve's exit status is 1 when a run past the knee
# missed a goal.
set -euo pipefail
cd "$(dirname "$0")/.."

users="100 1000 5000 10000"
apis="rest graphql"
out=target/loadtest/overload
while [ $# -gt 0 ]; do
  case "$1" in
    --users) users="$2"; shift ;;
    --apis) apis="$2"; shift ;;
    --out) out="$2"; shift ;;
    *) echo "overload: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

spawn_rate=50
mkdir -p "$out"
runs=()
for api in $apis; do
  for n in $users; do
    duration=$(( n / spawn_rate + 60 ))
    [ "$duration" -ge 150 ] || duration=150
    dir="$out/$api-$n"
    echo "overload: $api, $n users, ${duration} s" >&2
    # Refusals are the point past the knee, so no failure rate fails a run; the curve
    # judges it. A run that could not be carried out (status 2) stops the sweep.
    status=0
    loadtest/with-stack.sh --release --replicas 2 -- scenario --api "$api" --users "$n" \
      --spawn-rate "$spawn_rate" --duration "${duration}s" --max-failure-rate 1 \
      --report-dir "$dir" > "$dir.log" 2>&1 || status=$?
    tail -n 4 "$dir.log" >&2
    [ "$status" -le 1 ] || { echo "overload: the run failed to run ($status), see $dir.log" >&2; exit 2; }
    runs+=("$dir")
  done
done
"${CARGO_TARGET_DIR:-target}/release/ecanteen-loadtest" curve --report-dir "$out" "${runs[@]}"
