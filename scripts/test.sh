#!/usr/bin/env bash
# Runs every check and test of the project: the README's test command, and what CI runs.
#   formatting, clippy (warnings are errors), then all tests on SQLite and PostgreSQL,
#   then the browser client's tests in headless Chromium against the real stack, then
#   schemathesis against a replica, then a short run of the load test through the balancer.
# What the build and tests need (cmake, PostgreSQL) is installed or started when missing;
# set ECANTEEN_TEST_POSTGRES_URL to use another PostgreSQL server (the URL of a database
# whose user may create databases).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== browser tests (tests/browser)"
cargo build --workspace --locked --bins
(cd tests/browser && npm test --silent)
echo "== fuzz (tests/fuzz): schemathesis against a real replica, REST and GraphQL"
tests/fuzz/run.sh
echo "== benches build (cargo bench --no-run; docs/BENCHMARKS.md has the numbers)"
cargo bench -p ecanteen-benches --locked --no-run
echo "== load test smoke (loadtest/): 20 users for 15 s through the balancer, invariant checked"
loadtest/with-stack.sh -- scenario --users 20 --spawn-rate 4 --duration 15s \
  --think-min 200ms --think-max 800ms
