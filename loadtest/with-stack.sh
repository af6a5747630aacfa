#!/usr/bin/env bash
# Starts a stack on free loopback ports, runs ecanteen-loadtest against it, stops the
# stack, and exits with the load test's status.
#
#   loadtest/with-stack.sh [--release] [--replicas N | --direct] [--database-url URL] \
#       -- <ecanteen-loadtest arguments, without --target>
#
#   --release        use release builds (built if missing); the default is debug builds
#   --replicas N     the balancer with N spawned replicas (default 2)
#   --direct         one replica, no balancer
#   --database-url   default: a fresh SQLite file in a temporary directory
#   --limits         keep the balancer's rate limits and per-address caps (off by
#                    default: a capacity run's whole load comes from one address); the
#                    attack suite keeps them
#
# The balancer's admin URL is exported as ECANTEEN_LOADTEST_ADMIN.
#
# Examples:
#   loadtest/with-stack.sh -- scenario --users 20 --duration 15s
#   loadtest/with-stack.sh --release -- scenario --users 100 --report-dir target/loadtest/100
#   loadtest/with-stack.sh --release --direct -- capacity --workload reads --api graphql
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
replicas=2
direct=false
database_url=""
# Off unless --limits: the rate limits and the per-address caps (connections, requests
# in flight, WebSockets), since a capacity run's whole load comes from one address.
limits=(--rate-limit-ip 0 --rate-limit-partner 0 --max-connections-per-address 0
  --max-in-flight-per-address 0 --max-websockets-per-address 0)
while [ $# -gt 0 ]; do
  case "$1" in
    --limits) limits=() ;;
    --release) profile=release ;;
    --replicas) replicas="$2"; shift ;;
    --direct) direct=true ;;
    --database-url) database_url="$2"; shift ;;
    --) shift; break ;;
    *) echo "with-stack: unknown option $1 (arguments for the load test go after --)" >&2; exit 2 ;;
  esac
  shift
done

# In debug, every target, as `cargo test --workspace` builds them (so the dependencies'
# features resolve the same and nothing is compiled twice); in release, the binaries.
cargo_flags=(--locked --workspace --all-targets)
[ "$profile" = release ] && cargo_flags=(--locked --workspace --bins --release)
cargo build -q "${cargo_flags[@]}"
bin="${CARGO_TARGET_DIR:-target}/$profile"

work="$(mktemp -d)"
pids=()
stop() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap stop EXIT
[ -n "$database_url" ] || database_url="sqlite://$work/ecanteen.db"

# The stack is started on port 0: each process binds a free port itself and prints a
# "listening on http://ADDR" line once it holds it, so no other process can take a port
# between its pick and its use. `listening WORD` waits for that line in the log and prints
# the port after WORD ("http://", or "admin http://" for the balancer's admin endpoint).
listening() {
  local word="$1" line
  for _ in $(seq 300); do
    # The process's standard output is a file of its own (a spawned replica's lines,
    # forwarded to standard error, cannot be taken for the balancer's).
    line="$(grep -m1 -E '^ecanteen-(api|balancer) listening on http://' "$work/stdout.log" 2>/dev/null || true)"
    if [ -n "$line" ]; then
      line="${line#*"$word"}"
      line="${line%%[ )]*}"
      echo "${line##*:}"
      return
    fi
    if ! kill -0 "${pids[0]}" 2>/dev/null; then
      echo "with-stack: the stack exited:" >&2; cat "$work/stack.log" >&2; exit 2
    fi
    sleep 0.2
  done
  echo "with-stack: the stack did not say where it listens:" >&2; cat "$work/stack.log" >&2; exit 2
}

# The body of GET $path on 127.0.0.1:$port when it answers 200, else fails.
get() {
  local port="$1" path="$2" answer
  { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
  answer="$(cat <&3)"
  exec 3<&-
  case "$answer" in "HTTP/1."?" 200"*) printf '%s' "${answer#*$'\r\n\r\n'}" ;; *) return 1 ;; esac
}

export RUST_LOG="${RUST_LOG:-warn}"
if $direct; then
  "$bin/ecanteen-api" --listen 127.0.0.1:0 --database-url "$database_url" \
    > "$work/stdout.log" 2> "$work/stack.log" &
  pids+=($!)
  port="$(listening "http://")"
  ready() { get "$port" /readyz > /dev/null; }
  echo "with-stack: one replica ($profile) at http://127.0.0.1:$port, $database_url" >&2
else
  # The rate limits and per-address caps are off unless --limits: the whole load comes
  # from one IP, and measuring capacity is the point. (Their own tests are in
  # balancer/tests/stack/limits.rs and hostile.rs.)
  "$bin/ecanteen-balancer" --listen 127.0.0.1:0 --admin 127.0.0.1:0 \
    --spawn "$replicas" --api-bin "$bin/ecanteen-api" --database-url "$database_url" \
    ${limits[@]+"${limits[@]}"} \
    > "$work/stdout.log" 2> "$work/stack.log" &
  pids+=($!)
  port="$(listening "http://")"
  admin="$(listening "admin http://")"
  export ECANTEEN_LOADTEST_ADMIN="http://127.0.0.1:$admin"
  ready() { get "$admin" /status 2>/dev/null | grep -q "\"ready\":$replicas,"; }
  echo "with-stack: balancer ($profile) at http://127.0.0.1:$port, $replicas replicas, $database_url" >&2
fi

for _ in $(seq 300); do
  if ready; then break; fi
  if ! kill -0 "${pids[0]}" 2>/dev/null; then
    echo "with-stack: the stack exited:" >&2; cat "$work/stack.log" >&2; exit 2
  fi
  sleep 0.2
done
ready || { echo "with-stack: the stack did not become ready:" >&2; cat "$work/stack.log" >&2; exit 2; }

status=0
"$bin/ecanteen-loadtest" "$@" --target "http://127.0.0.1:$port" || status=$?
if [ "$status" -ne 0 ]; then
  echo "with-stack: the load test failed ($status); the stack's log:" >&2
  tail -n 50 "$work/stack.log" >&2
fi
exit "$status"
