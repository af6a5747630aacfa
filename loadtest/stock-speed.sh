#!/usr/bin/env bash
# Issue #18's numbers in one run: the engines' own ceiling beside the service's stock
# changes over HTTP, direct and through the balancer, on SQLite and PostgreSQL.
#
#   loadtest/stock-speed.sh [seconds]      (default 10 per measurement)
#
# Prints one line per measurement, ending with criterion's concurrent adjustStock (32
# tasks, in process); docs/BENCHMARKS.md ("Stock changes at the engine's speed")
# records a run.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
admin="${ECANTEEN_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export PGOPTIONS="-c client_min_messages=warning"
fresh_pg() {
  psql -q "$admin" -c "drop database if exists ecanteen_speed with (force)" -c "create database ecanteen_speed"
  echo "${admin%/*}/ecanteen_speed"
}
cargo build -q --locked --release -p ecanteen-api -p ecanteen-balancer

echo "== the engines alone"
benches/engine/ceiling.sh "$seconds"
for engine in sqlite postgres; do
  for door in direct balancer; do
    args=(--seconds "$seconds" --connections 32)
    [ "$door" = balancer ] && args+=(--balancer)
    [ "$engine" = postgres ] && args+=(--database-url "$(fresh_pg)")
    echo "== the service over HTTP: $engine, $door"
    loadtest/stock-wrk.sh "${args[@]}" 2>&1 | grep -E "Latency  |99%|succeeded|failed|ledger"
  done
done
psql -q "$admin" -c "drop database if exists ecanteen_speed with (force)"

echo "== the service in process (criterion, 32 tasks)"
# (criterion's second "thrpt" line, a change against its previous run, is left out)
cargo bench -q -p ecanteen-benches --bench stock -- concurrent 2>&1 \
  | grep -E "^adjustStock|thrpt:" | grep -v "%"
