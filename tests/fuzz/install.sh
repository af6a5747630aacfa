#!/usr/bin/env bash
# Installs schemathesis (pinned in requirements.txt) into a virtualenv under target/,
# when it is missing or the pins changed. tests/fuzz/run.sh calls it; scripts/test.sh
# starts it in the background while Rust compiles.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/fuzz-venv
if [ ! -x "$venv/bin/st" ] || [ tests/fuzz/requirements.txt -nt "$venv/.installed" ]; then
  echo "fuzz: installing schemathesis into $venv" >&2
  mkdir -p target
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/fuzz/requirements.txt
  touch "$venv/.installed"
fi
