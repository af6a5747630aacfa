#!/usr/bin/env bash
# Stock changes over HTTP at full speed, with wrk as the load generator (C, so it takes
# little of the two cores the replica shares with it).
#
#   loadtest/stock-wrk.sh [--database-url URL] [--balancer] [--api graphql|rest]
#                         [--seconds N] [--connections C]
#
# Starts one release replica (built if missing) on a fresh SQLite file, or on URL (a
# fresh PostgreSQL database, say); with --balancer, the balancer in front of it (rate
# limits off). Makes a partner with an API token and 64 products, then runs wrk for N s
# (default 10) on C connections (default 32): `adjustStock` of -1 or +1 on a random
# product (or, with --api rest, `POST /ecanteen/product/{id}/stock`), each request with
# its own idempotency key. Prints wrk's summary, the changes
# per second that succeeded, and the ledger check: every product's quantity is its
# start plus its ledger's deltas, and every key is in the ledger once.
set -euo pipefail
cd "$(dirname "$0")/.."

database_url=""
balancer=false
seconds=10
connections=32
api=graphql
while [ $# -gt 0 ]; do
  case "$1" in
    --database-url) database_url="$2"; shift ;;
    --balancer) balancer=true ;;
    --seconds) seconds="$2"; shift ;;
    --api) api="$2"; shift ;;
    --connections) connections="$2"; shift ;;
    *) echo "stock-wrk: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
command -v wrk > /dev/null || { echo "stock-wrk: installing wrk" >&2; apt-get install -y -qq wrk > /dev/null; }
cargo build -q --locked --release -p ecanteen-api -p ecanteen-balancer
bin="${CARGO_TARGET_DIR:-target}/release"

work="$(mktemp -d)"
pids=()
stop() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap stop EXIT
[ -n "$database_url" ] || database_url="sqlite://$work/ecanteen.db"

# Each process binds port 0 and names the port it holds in its listening line.
listening_port() { # log
  local line
  for _ in $(seq 100); do
    line="$(grep -m1 -E '^ecanteen-(api|balancer) listening on http://' "$1" 2>/dev/null || true)"
    if [ -n "$line" ]; then line="${line#*http://}"; line="${line%% *}"; echo "${line##*:}"; return; fi
    sleep 0.1
  done
  echo "stock-wrk: not up:" >&2; cat "$1" >&2; exit 1
}
RUST_LOG=warn "$bin/ecanteen-api" --listen 127.0.0.1:0 --database-url "$database_url" \
  > "$work/replica.log" 2>&1 &
pids+=($!)
port="$(listening_port "$work/replica.log")"
target="http://127.0.0.1:$port"
if $balancer; then
  RUST_LOG=warn "$bin/ecanteen-balancer" --listen 127.0.0.1:0 --admin 127.0.0.1:0 \
    --upstream "127.0.0.1:$port" --rate-limit-ip 0 --rate-limit-partner 0 \
    > "$work/balancer.log" 2>&1 &
  pids+=($!)
  target="http://127.0.0.1:$(listening_port "$work/balancer.log")"
fi
for _ in $(seq 100); do
  curl -fs "$target/readyz" > /dev/null 2>&1 && break
  sleep 0.1
done

gql() { # query variables [curl options...]
  local query="$1" variables="$2"; shift 2
  curl -fsS "$target/graphql" -H 'content-type: application/json' "$@" \
    --data "$(jq -nc --arg q "$query" --argjson v "$variables" '{query: $q, variables: $v}')"
}
user="wrk$RANDOM"
gql 'mutation($u: String!, $p: String!) { register(input: {username: $u, password: $p}) { id } }' \
  "{\"u\": \"$user\", \"p\": \"correct horse battery\"}" > /dev/null
gql 'mutation($u: String!, $p: String!) { login(username: $u, password: $p) { id } }' \
  "{\"u\": \"$user\", \"p\": \"correct horse battery\"}" -c "$work/cookies" > /dev/null
token="$(gql 'mutation { createApiToken(name: "wrk") { token } }' '{}' -b "$work/cookies" \
  | jq -r .data.createApiToken.token)"
ids=()
for i in $(seq 64); do
  ids+=("$(gql 'mutation($i: CreateProductInput!) { createProduct(input: $i) { id } }' \
    "{\"i\": {\"name\": \"Produk $i\", \"price\": 5000, \"quantity\": 1000000, \"category\": \"makanan\"}}" \
    -H "authorization: Bearer $token" | jq -r .data.createProduct.id)")
done

cat > "$work/stock.lua" <<LUA
local ids = { $(IFS=,; echo "${ids[*]}") }
local n = 0
local run = "$RANDOM$RANDOM"
failed = 0
local threads = {}
setup = function(thread) table.insert(threads, thread) end
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer $token"
local api = "$api"
request = function()
  n = n + 1
  local id = ids[math.random(#ids)]
  local delta = (math.random(2) == 1) and -1 or 1
  local key = run .. '-' .. n
  if api == "rest" then
    -- A table of headers replaces wrk.headers: all three are given.
    return wrk.format(nil, "/ecanteen/product/" .. id .. "/stock",
      { ["content-type"] = "application/json", ["authorization"] = "Bearer $token",
        ["idempotency-key"] = key }, '{"delta":' .. delta .. '}')
  end
  local body = '{"query":"mutation(\$i: AdjustStockInput!) { adjustStock(input: \$i) { product { quantity } movement { id } } }","variables":{"i":{"productId":"'
    .. id .. '","delta":' .. delta .. ',"idempotencyKey":"' .. key .. '"}}}'
  return wrk.format(nil, "/graphql", nil, body)
end
response = function(status, headers, body)
  if status ~= 200 or string.find(body, '"errors"', 1, true) then failed = failed + 1 end
end
done = function(summary, latency, requests)
  local failed = 0
  for _, thread in ipairs(threads) do failed = failed + thread:get("failed") end
  local ok = summary.requests - failed
  io.write(string.format("failed (non-200 or GraphQL errors): %d\n", failed))
  io.write(string.format("stock changes/s (succeeded): %.0f\n", ok / (summary.duration / 1e6)))
end
LUA
echo "stock-wrk: $api, $seconds s, $connections connections, $( $balancer && echo 'through the balancer' || echo 'direct'), $database_url" >&2
wrk -t1 -c"$connections" -d"${seconds}s" --latency -s "$work/stock.lua" "$target" | tee "$work/wrk.txt"

# The ledger check, in the database.
case "$database_url" in
  sqlite:*) query() { sqlite3 "${database_url#sqlite://}" "$1"; } ;;
  *) query() { psql -qtA "$database_url" -c "$1"; } ;;
esac
bad="$(query "select count(*) from products p where p.quantity <> (select sum(delta) from stock_movements m where m.product_id = p.id)")"
dup="$(query "select count(*) from (select idempotency_key from stock_movements where idempotency_key is not null group by idempotency_key having count(*) > 1) d")"
keys="$(query "select count(*) from idempotency_keys where operation = 'adjustStock'")"
rows="$(query "select count(*) from stock_movements where idempotency_key is not null")"
echo "ledger: $rows keyed changes, $keys keys recorded, $dup keys twice, $bad products off their ledger"
[ "$bad" = 0 ] && [ "$dup" = 0 ] && [ "$keys" = "$rows" ] || { echo "stock-wrk: the ledger check FAILED" >&2; exit 1; }
