#!/usr/bin/env bash
# The engines' own ceiling for a stock change, measured beside the service's numbers so
# that docs/BENCHMARKS.md can give ratios of one run:
#
#   benches/engine/ceiling.sh [seconds]      (default 10)
#
# - SQLite: one writer in Python's sqlite3 (sqlite_stock.py), the service's transaction.
# - PostgreSQL: pgbench with 32 clients on a fresh database migrated with
#   migrations/postgres and 64 products, once with the transaction as separate statements
#   (pg-stock.sql) and once as one statement (pg-stock-one-statement.sql).
#
# PostgreSQL at ECANTEEN_BENCH_POSTGRES_URL's server (default postgres@127.0.0.1:5432).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-10}"
export PGOPTIONS="-c client_min_messages=warning"
admin="${ECANTEEN_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
db=ecanteen_ceiling
base="${admin%/*}"

python3 sqlite_stock.py "$seconds"

psql -q "$admin" -c "drop database if exists $db with (force)" -c "create database $db"
trap 'psql -q "$admin" -c "drop database if exists $db with (force)" >/dev/null 2>&1 || true' EXIT
for migration in ../../migrations/postgres/*.sql; do
  psql -q -v ON_ERROR_STOP=1 "$base/$db" -f "$migration"
done
psql -q -v ON_ERROR_STOP=1 "$base/$db" <<'SQL'
insert into users (username, password_hash, created_at) values ('bench', '', 0);
insert into products (owner_id, name, name_key, price, quantity, category, created_at, updated_at)
select 1, 'p' || i, 'p' || i, 1000, 1000000, 'makanan', 0, 0 from generate_series(1, 64) i;
SQL
for script in pg-stock.sql pg-stock-one-statement.sql; do
  tps="$(pgbench -n -c 32 -j 2 -T "$seconds" -f "$script" "$base/$db" 2>/dev/null \
    | sed -n 's/^tps = \([0-9.]*\).*/\1/p')"
  echo "postgres $script: ${tps%.*} changes/s (pgbench, 32 clients)"
done
