#!/usr/bin/env bash
# Runs every check and test of the project: the README's test command, and what CI runs.
#   formatting, clippy (warnings are errors), then all tests on SQLite and PostgreSQL.
# PostgreSQL is started (or installed) when missing; set ECANTEEN_TEST_POSTGRES_URL to
# use another server (the URL of a database the tests may create databases from).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${ECANTEEN_TEST_POSTGRES_URL:-}" ]; then
  scripts/ensure-postgres.sh
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
