#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 for the tests, with the
# user postgres and trust authentication on loopback. Uses a running server as it is;
# otherwise starts an installed cluster, or installs Debian's postgresql and starts it.
# Idempotent: safe to run again and again.
set -euo pipefail

host=127.0.0.1
port=5432

ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }

if command -v pg_isready >/dev/null 2>&1 && ready; then
  exit 0
fi

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "ensure-postgres: installing PostgreSQL from Debian's packages" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql postgresql-client >/dev/null
fi

version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! ls /etc/postgresql/"$version"/main >/dev/null 2>&1; then
  as_root pg_createcluster "$version" main >/dev/null
fi

# Trust on loopback only, for the test user; added once.
hba=/etc/postgresql/"$version"/main/pg_hba.conf
if ! grep -q "ecanteen-test" "$hba"; then
  tmp=$(mktemp)
  {
    echo "# ecanteen-test: trust loopback connections (test machines only)"
    echo "host all all 127.0.0.1/32 trust"
    echo "host all all ::1/128 trust"
    cat "$hba"
  } >"$tmp"
  as_root cp "$tmp" "$hba"
  rm -f "$tmp"
fi

as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
  || as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload

for _ in $(seq 1 30); do
  ready && exit 0
  sleep 1
done
echo "ensure-postgres: PostgreSQL did not become ready on $host:$port" >&2
exit 1
