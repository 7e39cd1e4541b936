#!/usr/bin/env bash
# The test command from the README: installs what the tests need, builds
# the workspace, and runs every test (unit and integration).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
cargo nextest run --workspace --locked "$@"
