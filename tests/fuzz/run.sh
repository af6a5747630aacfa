#!/usr/bin/env bash
# Fuzzes a real replica from outside with schemathesis (pinned in requirements.txt, in a
# virtualenv under target/): the REST routes from their OpenAPI document, and the
# GraphQL endpoint from introspection, with generated and mutated inputs. Every answer
# must be below 500, and every GraphQL error must carry a code other than INTERNAL (the
# check in hooks.py); the replica must still be ready at the end. Deterministic
# generation: a failure reproduces.
#
#   tests/fuzz/run.sh [EXAMPLES]    (examples per operation; default 25)
set -euo pipefail
cd "$(dirname "$0")/../.."
examples="${1:-25}"

venv=target/fuzz-venv
tests/fuzz/install.sh

# The whole workspace with its tests, as `cargo test --workspace` builds it: building
# the replica alone would resolve its dependencies' features differently and compile
# them a second time.
cargo build -q --locked --workspace --all-targets
work="$(mktemp -d)"
# Port 0: the replica binds a free port itself and names it in its listening line.
RUST_LOG=warn target/debug/ecanteen-api --listen 127.0.0.1:0 \
  --database-url "sqlite://$work/fuzz.db" > "$work/replica.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
port=""
for _ in $(seq 100); do
  line="$(grep -m1 '^ecanteen-api listening on http://' "$work/replica.log" 2>/dev/null || true)"
  if [ -n "$line" ]; then port="${line##*:}"; break; fi
  sleep 0.1
done
[ -n "$port" ] || { echo "fuzz: the replica did not start:" >&2; cat "$work/replica.log" >&2; exit 1; }
base="http://127.0.0.1:$port"
for _ in $(seq 100); do
  curl -sf "$base/readyz" > /dev/null && break
  sleep 0.1
done

# A partner with a token and a product, so writes reach past authentication.
gql() {
  curl -sf "$base/graphql" -H 'content-type: application/json' -b "$work/cookies" -c "$work/cookies" \
    ${token:+-H "authorization: Bearer $token"} -d "$1"
}
token=""
gql '{"query":"mutation { register(input: {username: \"fuzzer\", password: \"correct horse battery\"}) { id } }"}' > /dev/null
gql '{"query":"mutation { login(username: \"fuzzer\", password: \"correct horse battery\") { id } }"}' > /dev/null
token="$(gql '{"query":"mutation { createApiToken(name: \"fuzz\") { token } }"}' \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["createApiToken"]["token"])')"
gql '{"query":"mutation { createProduct(input: {name: \"Es Teh\", price: 3000, quantity: 5, category: \"minuman\"}) { id } }"}' > /dev/null

export SCHEMATHESIS_HOOKS=hooks
export PYTHONPATH="$PWD/tests/fuzz"
st=("$venv/bin/st" run --checks coded_client_errors_only --max-examples "$examples" \
  --generation-deterministic --header "Authorization: Bearer $token")
echo "== fuzz: REST, from the OpenAPI document"
"${st[@]}" "$base/ecanteen/openapi.json" --url "$base"
echo "== fuzz: GraphQL, from introspection"
"${st[@]}" "$base/graphql"

status="$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")"
if [ "$status" != 200 ]; then
  echo "fuzz: the replica is not ready after the run ($status)" >&2
  tail -n 20 "$work/replica.log" >&2
  exit 1
fi
echo "fuzz: no 5xx, no uncoded or internal error, and the replica still serves"
