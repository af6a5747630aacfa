#!/usr/bin/env bash
# Installs the system packages the build and tests need, when missing (idempotent):
#   cmake, which pingora (the balancer) needs to build zlib-ng;
#   PostgreSQL, for the tests that run on it (scripts/ensure-postgres.sh);
#   Chromium and playwright-core, for the browser client's tests (which also need
#   Node.js 20 or newer: Debian 12's is 18, so the script stops with a message when
#   the machine has no newer one);
#   Python's venv, for schemathesis (tests/fuzz/run.sh installs it from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

mode=all
case "${1:-}" in
  --system) mode=system ;;
  --packages) mode=packages ;;
  "") ;;
  *) echo "install-deps: unknown option $1 (--system, --packages)" >&2; exit 2 ;;
esac

# What comes from Debian, and a running PostgreSQL.
system() {
  missing=()
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  # A virtualenv for schemathesis (tests/fuzz/run.sh).
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
  if [ -z "${ECANTEEN_TEST_POSTGRES_URL:-}" ]; then
    command -v pg_isready >/dev/null 2>&1 || missing+=(postgresql-client)
  fi
  node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if [ "$node_major" -lt 20 ]; then
    echo "install-deps: the browser tests need Node.js 20 or newer (found: $(node --version 2>/dev/null || echo none));" >&2
    echo "install-deps: Debian 12's nodejs is 18: install 20 or newer from NodeSource or nvm" >&2
    exit 1
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi

  if [ -z "${ECANTEEN_TEST_POSTGRES_URL:-}" ]; then
    scripts/ensure-postgres.sh
  fi
}

# The packages the tests download: playwright-core, graphql-http and graphql-schema-linter
# (npm), schemathesis (PyPI).
# `--system` installs only the above; `--packages` only these (scripts/test.sh runs that
# in the background while Rust compiles).
packages() {
  # playwright-core, at the version the lock file pins; it drives Debian's Chromium and
  # downloads no browser of its own. axe-core, the accessibility audit it runs.
  # graphql-http, the GraphQL-over-HTTP audit suite (tests/graphql-http).
  # graphql-schema-linter, on the exported SDL (tests/schema-lint).
  for dir in tests/browser tests/graphql-http tests/schema-lint; do
    if [ ! -f "$dir/node_modules/.package-lock.json" ] \
      || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
      echo "install-deps: installing the npm packages of $dir" >&2
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
  done
  tests/fuzz/install.sh
}
[ "$mode" = packages ] || system
[ "$mode" = system ] || packages
