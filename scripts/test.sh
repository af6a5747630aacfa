#!/usr/bin/env bash
# Runs every check and test of the project: the README's test command, and what CI runs.
#   formatting, clippy (warnings are errors), then all tests on SQLite and PostgreSQL
#   (each criterion bench run once as a test), then the browser client's tests in
#   headless Chromium against the real stack, graphql-http's audit, graphql-schema-linter's
#   description rules on schema.graphql, then schemathesis against a replica, then a
#   short run of the load test through the balancer, then the attack suite.
# What the build and tests need (cmake, PostgreSQL) is installed or started when missing;
# the npm and PyPI packages download in the background while Rust compiles. Set
# ECANTEEN_TEST_POSTGRES_URL to use another PostgreSQL server (the URL of a database
# whose user may create databases). Each stage prints how long it took, and the end a
# summary.
#
# Every cargo command builds the whole workspace with its tests (`--workspace`, and
# `--all-targets` where it builds), so the dependencies' features resolve one way and
# nothing is compiled twice.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
stage_started=$SECONDS
stage_name=""
timings=()
stage() {
  if [ -n "$stage_name" ]; then
    local took=$((SECONDS - stage_started))
    timings+=("$(printf '%5ds  %s' "$took" "$stage_name")")
    echo "-- $stage_name: ${took}s"
  fi
  stage_name="$1"
  stage_started=$SECONDS
  [ -z "$stage_name" ] || echo "== $stage_name"
}
summary() {
  stage ""
  echo "== stages"
  printf '%s\n' "${timings[@]}"
  echo "$(printf '%5ds  total' $((SECONDS - started)))"
}

# The timings so far also when a stage fails.
trap 'status=$?; if [ "$status" -ne 0 ] && [ -n "$stage_name" ]; then echo "!! $stage_name failed"; summary; fi' EXIT

stage "install what is missing"
scripts/install-deps.sh --system
mkdir -p target
scripts/install-deps.sh --packages > target/packages.log 2>&1 &
packages=$!
wait_for_packages() {
  if ! wait "$packages"; then
    cat target/packages.log >&2
    echo "test: installing the npm or PyPI packages failed" >&2
    exit 1
  fi
}

stage "cargo fmt --check"
cargo fmt --all -- --check
stage "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
stage "cargo test"
cargo test --workspace --locked
stage "benches, each run once (cargo test --benches; docs/BENCHMARKS.md has the numbers)"
cargo test --workspace --locked --benches
stage "browser tests (tests/browser)"
cargo build --workspace --locked --all-targets
wait_for_packages
(cd tests/browser && npm test --silent)
stage "GraphQL over HTTP: graphql-http's audit suite (tests/graphql-http)"
(cd tests/graphql-http && npm test --silent)
stage "schema descriptions: graphql-schema-linter on schema.graphql (tests/schema-lint)"
(cd tests/schema-lint && npm test --silent)
stage "fuzz (tests/fuzz): schemathesis against a real replica, REST and GraphQL"
tests/fuzz/run.sh
stage "load test smoke (loadtest/): 20 users for 15 s through the balancer, invariant checked"
loadtest/with-stack.sh -- scenario --users 20 --spawn-rate 4 --duration 15s \
  --think-min 200ms --think-max 800ms
# The honest partners' p99 goal (300 ms) is the benchmark's, on release builds
# (docs/BENCHMARKS.md, "Hostile clients"); here, on debug builds, every other item of
# the goal must hold: no honest failure, no replica ejected or unhealthy, replica memory
# bounded, the balancer still accepting.
stage "attack suite (loadtest/attack.sh): each hostile-client attack for 5 s while 8 partners read and sell"
loadtest/attack.sh -- --duration 5s --max-p99-ms 5000
summary
