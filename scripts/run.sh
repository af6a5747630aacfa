#!/usr/bin/env bash
# Starts the whole stack on this machine: the balancer on http://127.0.0.1:8080/ (the
# browser client, GraphQL and REST), in front of three replicas sharing the embedded
# SQLite file ecanteen.db; status and metrics on http://127.0.0.1:9090/.
#
# Installs what the build needs when it is missing (cmake, which pingora needs to build
# zlib-ng, and a C compiler with make), builds the two binaries in release, and runs
# `ecanteen-balancer --spawn 3`. Arguments are passed to the balancer, for example
# `scripts/run.sh --log-format json` or `scripts/run.sh --database-url postgres://…`.
# Stop it with Ctrl-C: the replicas drain and stop with it.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "run: cargo is not installed; install Rust with rustup (https://rustup.rs) first" >&2
  exit 1
fi
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || missing+=(make)
if [ ${#missing[@]} -gt 0 ]; then
  echo "run: installing ${missing[*]} (the build needs them)" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release --bins -p ecanteen-api -p ecanteen-balancer
exec target/release/ecanteen-balancer --spawn 3 "$@"
