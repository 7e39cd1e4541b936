#!/usr/bin/env bash
# Runs moat's benchmarks: installs the peers it compares against (Debian
# packages), builds moat in release mode, and runs the harness. Arguments
# go to the harness, e.g. `bash bench/run.sh --runs 50 lifecycle`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
missing=()
for p in runc crun dockerd podman nginx; do
  command -v "$p" >/dev/null || missing+=("$p")
done
if ((${#missing[@]})); then
  pkgs=("${missing[@]/dockerd/docker.io}")
  echo "installing peers: ${pkgs[*]}"
  # Install without starting services: the harness starts each peer itself,
  # on its own socket, and stops it after.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
cargo build --release --locked -p moat -p moat-bench
mkdir -p target/bench
exec target/release/moat-bench --moat target/release/moat --json target/bench/latest.json "$@"
