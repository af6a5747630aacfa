#!/usr/bin/env bash
# Benchmark: the same GraphQL product read, direct to one replica, through
# ecanteen-balancer to two replicas, through nginx (least_conn, keep-alive to the
# upstreams) and through HAProxy (leastconn, http-reuse always, one thread) to the same
# two replicas, in one run, the targets interleaved in each round. Prints a Markdown table for
# docs/BENCHMARKS.md. Beside throughput and latency it reports each proxy's own CPU time
# per request (user + system, from /proc), which is steadier than throughput on a shared
# machine because it does not depend on what else got the CPU, and the mean and spread
# (sample standard deviation) of each target over the rounds.
#
#   balancer/bench/compare.sh [seconds per run] [connections] [rounds] [path]
#
# path defaults to the product read; `/healthz` (almost no replica work) isolates the
# proxies' own cost.
#
# ECANTEEN_BENCH_BALANCER=path measures another build of the balancer (an earlier commit's,
# say) against the same anchors; the default is this workspace's release build.
#
# Loopback only; bounded by time. Needs wrk, nginx-light and haproxy (installed when
# missing).
set -euo pipefail
cd "$(dirname "$0")/../.."

duration=${1:-10}
connections=${2:-32}
rounds=${3:-3}
path=${4:-}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ -x /usr/sbin/haproxy ] || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release --workspace --quiet
bin=target/release

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The front doors (ours, nginx, HAProxy) get a port picked here and bind it themselves:
# another process could take it in between, and then that front door fails to start and
# wait_http stops the run with "not up" (never a silent mix-up). ECANTEEN_BENCH_BALANCER
# may be an older build, so ours is given a port like the others. The replicas bind
# port 0 and say which port they got (listening_port), which cannot race.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
listening_port() {
  for _ in $(seq 1 100); do
    line=$(grep -m1 '^ecanteen-api listening on http://' "$1" 2>/dev/null || true)
    [ -n "$line" ] && { echo "${line##*:}"; return 0; }
    sleep 0.1
  done
  echo "not up: $1" >&2; cat "$1" >&2; exit 1
}
wait_http() { for _ in $(seq 1 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not up: $1" >&2; exit 1; }

db="sqlite://$work/bench.db"
lb=$(free_port); admin=$(free_port); ngx=$(free_port); hap=$(free_port)
RUST_LOG=warn "$bin/ecanteen-api" --listen 127.0.0.1:0 --database-url "$db" >"$work/r1.log" 2>&1 & pids+=($!)
r1=$(listening_port "$work/r1.log")
RUST_LOG=warn "$bin/ecanteen-api" --listen 127.0.0.1:0 --database-url "$db" >"$work/r2.log" 2>&1 & pids+=($!)
r2=$(listening_port "$work/r2.log")
wait_http http://127.0.0.1:$r1/readyz
wait_http http://127.0.0.1:$r2/readyz

# 50 products to read.
jar="$work/jar"
gql() { curl -fs -b "$jar" -c "$jar" -H 'content-type: application/json' http://127.0.0.1:$r1/graphql -d "$1" >/dev/null; }
gql '{"query":"mutation { register(input: {username: \"bench\", password: \"benchmark-pass\"}) { id } }"}'
gql '{"query":"mutation { login(username: \"bench\", password: \"benchmark-pass\") { id } }"}'
for i in $(seq 1 50); do
  gql "{\"query\":\"mutation { createProduct(input: {name: \\\"Product $i\\\", price: $((i * 1000)), quantity: $i, category: \\\"makanan\\\"}) { id } }\"}"
done

RUST_LOG=warn "${ECANTEEN_BENCH_BALANCER:-$bin/ecanteen-balancer}" --listen 127.0.0.1:$lb --admin 127.0.0.1:$admin \
  --upstream 127.0.0.1:$r1 --upstream 127.0.0.1:$r2 --threads 1 \
  --rate-limit-ip 0 --rate-limit-partner 0 >/dev/null 2>&1 & pids+=($!)
lb_pid=$!

cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  upstream replicas {
    least_conn;
    server 127.0.0.1:$r1;
    server 127.0.0.1:$r2;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$ngx;
    location / {
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # The same headers ecanteen-balancer sets, so both do the same work.
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header X-Request-Id \$request_id;
      add_header X-Request-Id \$request_id always;
    }
  }
}
NGINX
/usr/sbin/nginx -c "$work/nginx.conf" -p "$work" & pids+=($!)
nginx_master=$!

# HAProxy as issue #20 measured it: least connections, idle server connections shared
# across clients (http-reuse always), one thread, the same forwarding headers.
cat >"$work/haproxy.cfg" <<HAPROXY
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend front
  bind 127.0.0.1:$hap
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  unique-id-format %{+X}o%ci%cp%fp%Ts%rt%pid
  unique-id-header X-Request-Id
  http-response set-header X-Request-Id %[unique-id]
  default_backend replicas
backend replicas
  balance leastconn
  http-reuse always
  server r1 127.0.0.1:$r1
  server r2 127.0.0.1:$r2
HAPROXY
/usr/sbin/haproxy -db -f "$work/haproxy.cfg" & pids+=($!)
haproxy_pid=$!

query=${path:-'/graphql?query=%7B%20products(first%3A%2020)%20%7B%20edges%20%7B%20node%20%7B%20id%20name%20price%20quantity%20%7D%20%7D%20%7D%20%7D'}
wait_http "http://127.0.0.1:$lb$query"
wait_http "http://127.0.0.1:$ngx$query"
wait_http "http://127.0.0.1:$hap$query"
nginx_pid=$(pgrep -P "$nginx_master" | head -1)

# CPU time (user + system) of a process so far, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# wrk's summary: requests/s, mean and p99 latency in ms, errors (non-2xx + socket), and
# the CPU microseconds per request of process $2 during the run ("-" without one).
run() {
  local out rps mean p99 non2xx sock requests before after cpu=-
  [ -n "$2" ] && before=$(ticks "$2")
  out=$(wrk -t1 -c"$connections" -d"${duration}s" --latency "http://127.0.0.1:$1$query")
  [ -n "$2" ] && after=$(ticks "$2")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.2f", v}'; }
  mean=$(awk '/Latency/ && !/Distribution/ {print $2; exit}' <<<"$out" | to_ms)
  p99=$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out"); non2xx=${non2xx:-0}
  sock=$(awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10}' <<<"$out"); sock=${sock:-0}
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  if [ -n "$2" ]; then
    cpu=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
  fi
  echo "$rps $mean $p99 $((non2xx + sock)) $cpu"
}

declare -A rps_all cpu_all
echo "| round | target | requests/s | mean ms | p99 ms | errors | proxy CPU µs/request |"
echo "|---|---|---|---|---|---|---|"
for round in $(seq 1 "$rounds"); do
  for target in direct:$r1: pingora:$lb:$lb_pid nginx:$ngx:$nginx_pid haproxy:$hap:$haproxy_pid; do
    IFS=: read -r name port pid <<<"$target"
    read -r rps mean p99 errors cpu <<<"$(run "$port" "$pid")"
    rps_all[$name]="${rps_all[$name]:-} $rps"
    [ "$cpu" = - ] || cpu_all[$name]="${cpu_all[$name]:-} $cpu"
    echo "| $round | $name | $rps | $mean | $p99 | $errors | $cpu |"
  done
done
echo
# "mean ± sample standard deviation" of a list of numbers.
spread() { tr ' ' '\n' <<<"$1" | awk -v f="$2" 'NF {n++; s+=$1; q+=$1*$1} END {
  m = s / n; sd = n > 1 ? sqrt((q - n*m*m) / (n - 1)) : 0; if (sd < 0) sd = 0;
  printf f " ± " f, m, sd }'; }
mean_of() { tr ' ' '\n' <<<"$1" | awk 'NF {n++; s+=$1} END {print s / n}'; }
echo "| target | requests/s over $rounds rounds | proxy CPU µs/request |"
echo "|---|---|---|"
for name in direct pingora nginx haproxy; do
  cpu=-
  [ -n "${cpu_all[$name]:-}" ] && cpu=$(spread "${cpu_all[$name]}" "%.1f")
  echo "| $name | $(spread "${rps_all[$name]}" "%.0f") | $cpu |"
done
echo
awk -v p="$(mean_of "${rps_all[pingora]}")" -v n="$(mean_of "${rps_all[nginx]}")" \
  -v h="$(mean_of "${rps_all[haproxy]}")" 'BEGIN {
  printf "ecanteen-balancer / nginx throughput ratio: %.2f\n", p / n;
  printf "ecanteen-balancer / HAProxy throughput ratio: %.2f\n", p / h }'
