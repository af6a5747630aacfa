#!/usr/bin/env bash
# The attack suite (issue #33): every hostile-client attack at its budget against a stack
# of its own (the balancer with its rate limits on, two replicas, a fresh SQLite file),
# while eight honest partners on 127.0.0.1 read and sell; the attacker is 127.0.0.2.
# Exits 1 when an attack broke an item of the goal (docs/RELIABILITY.md, "Hostile
# clients"), and prints one table.
#
#   loadtest/attack.sh [--release] [-- <more ecanteen-loadtest attack arguments>]
#
# CI runs it with debug builds and 5 s per attack (scripts/test.sh); the benchmark is
#   loadtest/attack.sh --release -- --duration 30s --report-dir target/loadtest/attack
set -euo pipefail
cd "$(dirname "$0")/.."
stack=()
while [ $# -gt 0 ]; do
  case "$1" in
    --release) stack+=(--release) ;;
    --) shift; break ;;
    *) echo "attack: unknown option $1 (arguments for the attack go after --)" >&2; exit 2 ;;
  esac
  shift
done
exec loadtest/with-stack.sh "${stack[@]+"${stack[@]}"}" --replicas 2 --limits -- attack "$@"
