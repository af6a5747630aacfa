#!/usr/bin/env bash
# The overload curve of issue 15: the paper's scenario at 100, 1,000, 5,000 and 10,000
# users, spawn rate 50, over REST and over GraphQL, each on a fresh stack (the balancer,
# two release replicas, a new SQLite file), then the curve of goodput and p99 against
# users, with the knee and the goals past it (docs/BENCHMARKS.md, "Overload").
#
#   loadtest/overload.sh [--users "100 1000 5000 10000"] [--apis "rest graphql"] [--out DIR]
#                        [--database-url postgres://USER@HOST:PORT/DB]
#
# With --database-url (a PostgreSQL server; DB is only where to connect to create
# more), each run gets a fresh database of its own on that server, dropped after it,
# and the curve goes to target/loadtest/overload-postgres unless --out says otherwise.
# A local server on 127.0.0.1:5432 is started when it is not running
# (scripts/ensure-postgres.sh).
#
# Each run lasts its ramp (users / 50 s) plus 60 s at full load, and at least 150 s:
# about 25 minutes in all. The curve's exit status is 1 when a run past the knee
# missed a goal.
set -euo pipefail
cd "$(dirname "$0")/.."

users="100 1000 5000 10000"
apis="rest graphql"
out=""
server_url=""
while [ $# -gt 0 ]; do
  case "$1" in
    --users) users="$2"; shift ;;
    --apis) apis="$2"; shift ;;
    --out) out="$2"; shift ;;
    --database-url) server_url="$2"; shift ;;
    *) echo "overload: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

case "$server_url" in
  "") out="${out:-target/loadtest/overload}" ;;
  postgres://*|postgresql://*)
    out="${out:-target/loadtest/overload-postgres}"
    case "$server_url" in *@127.0.0.1:5432/*|*@localhost:5432/*) scripts/ensure-postgres.sh ;; esac
    ;;
  *) echo "overload: --database-url takes a PostgreSQL server's URL" >&2; exit 2 ;;
esac
# A fresh database on the server for one run, named NAME: its URL.
fresh_database() {
  local name="$1"
  psql -q -v ON_ERROR_STOP=1 "$server_url" -c "drop database if exists $name" \
    -c "create database $name" >&2
  echo "${server_url%/*}/$name"
}
drop_database() {
  psql -q "$server_url" -c "drop database if exists $1 with (force)" >&2 || true
}

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
    database=()
    name="ecanteen_overload_${api}_${n}"
    [ -z "$server_url" ] || database=(--database-url "$(fresh_database "$name")")
    status=0
    loadtest/with-stack.sh --release --replicas 2 ${database[@]+"${database[@]}"} -- \
      scenario --api "$api" --users "$n" \
      --spawn-rate "$spawn_rate" --duration "${duration}s" --max-failure-rate 1 \
      --report-dir "$dir" > "$dir.log" 2>&1 || status=$?
    [ -z "$server_url" ] || drop_database "$name"
    tail -n 4 "$dir.log" >&2
    [ "$status" -le 1 ] || { echo "overload: the run failed to run ($status), see $dir.log" >&2; exit 2; }
    runs+=("$dir")
  done
done
"${CARGO_TARGET_DIR:-target}/release/ecanteen-loadtest" curve --report-dir "$out" "${runs[@]}"
