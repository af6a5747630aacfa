#!/usr/bin/env bash
# The attack suite against nginx in front of the same two replicas, configured as
# closely as nginx allows to the balancer's defences (docs/BENCHMARKS.md, "Hostile
# clients"): client_header_timeout, client_body_timeout, keepalive_timeout,
# send_timeout, client_max_body_size per route, limit_conn per address, limit_req per
# address (the balancer's per-IP rate), least_conn with max_fails. nginx has no
# per-partner limit, no WebSocket budget and no notion of a request being "ready", so
# those rows show what nginx does without them. Release builds; installs nginx from
# Debian when missing.
#
#   loadtest/attack-nginx.sh [-- <more ecanteen-loadtest attack arguments>]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = "--" ] && shift

if [ ! -x /usr/sbin/nginx ]; then
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nginx-light > /dev/null
fi
cargo build -q --locked --workspace --bins --release
bin=target/release

work="$(mktemp -d)"
pids=()
stop() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap stop EXIT
export RUST_LOG=warn

# Each replica binds port 0 and names its port in its listening line.
start_replica() { # name
  "$bin/ecanteen-api" --listen 127.0.0.1:0 --database-url "sqlite://$work/ecanteen.db" \
    > "$work/$1.out" 2> "$work/$1.log" &
  pids+=($!)
}
port_of() { # name
  local line
  for _ in $(seq 300); do
    line="$(grep -m1 '^ecanteen-api listening on http://' "$work/$1.out" 2>/dev/null || true)"
    [ -n "$line" ] && { echo "${line##*:}"; return; }
    sleep 0.1
  done
  echo "attack-nginx: replica $1 did not start" >&2; cat "$work/$1.log" >&2; exit 2
}
start_replica r1; r1_pid="${pids[-1]}"; r1="$(port_of r1)"
start_replica r2; r2_pid="${pids[-1]}"; r2="$(port_of r2)"
# nginx takes no port 0 that it reports: a port is picked here, and nginx fails to start
# (and the run stops) if another process took it in between.
front="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log crit;
events { worker_connections 16384; }
http {
  access_log off;
  client_header_timeout 10s;
  client_body_timeout 10s;
  keepalive_timeout 15s;
  send_timeout 30s;
  client_max_body_size 1m;
  limit_conn_zone \$binary_remote_addr zone=per_address:10m;
  limit_conn per_address 256;
  limit_req_zone \$binary_remote_addr zone=rate:10m rate=1000r/s;
  limit_req zone=rate burst=1000 nodelay;
  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
  upstream replicas {
    least_conn;
    server 127.0.0.1:$r1 max_fails=3 fail_timeout=10s;
    server 127.0.0.1:$r2 max_fails=3 fail_timeout=10s;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$front backlog=4096;
    proxy_http_version 1.1;
    proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    location = /graphql/ws {
      proxy_pass http://replicas;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_read_timeout 1h;
    }
    location ~ ^/ecanteen/product/[^/]+/image\$ {
      client_max_body_size 6m;
      proxy_pass http://replicas;
      proxy_set_header Connection "";
    }
    location / {
      proxy_pass http://replicas;
      proxy_set_header Connection "";
    }
  }
}
NGINX
/usr/sbin/nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$front/readyz" > /dev/null 2>&1 && break
  sleep 0.1
done
"$bin/ecanteen-loadtest" attack --target "http://127.0.0.1:$front" \
  --replica "http://127.0.0.1:$r1=$r1_pid" --replica "http://127.0.0.1:$r2=$r2_pid" "$@"
