#!/usr/bin/env bash
# Runs moat's benchmarks: installs the peers it compares against (Debian
# packages), builds moat in release mode, and runs the harness. Arguments
# go to the harness, e.g. `bash bench/run.sh --runs 50 lifecycle`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
missing=()
for p in runc crun; do
  command -v "$p" >/dev/null || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing peers: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
cargo build --release --locked -p moat -p moat-bench
mkdir -p target/bench
exec target/release/moat-bench --moat target/release/moat --json target/bench/latest.json "$@"
