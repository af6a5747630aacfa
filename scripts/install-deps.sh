#!/usr/bin/env bash
# Installs the system packages the build and tests need, when missing (idempotent):
#   cmake, which pingora (the balancer) needs to build zlib-ng;
#   PostgreSQL, for the tests that run on it (scripts/ensure-postgres.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
if [ -z "${ECANTEEN_TEST_POSTGRES_URL:-}" ]; then
  command -v pg_isready >/dev/null 2>&1 || missing+=(postgresql-client)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -z "${ECANTEEN_TEST_POSTGRES_URL:-}" ]; then
  scripts/ensure-postgres.sh
fi
