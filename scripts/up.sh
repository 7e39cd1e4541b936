#!/usr/bin/env bash
# The run command from the README: installs what moat needs, builds it,
# and runs `moat up`, which sets up the PKI, the default policy and an
# admin client bundle under the state root (default /var/lib/moat) if they
# are missing, starts the engine and the gateway, makes busybox:test
# available offline, and prints how to point docker at it. Ctrl-C stops
# both; running it again reuses the state. Arguments go to `moat up`
# (see `moat up --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release --locked -p moat
# On PATH, so the README's `moat certs ...`, `moat audit ...` and
# `moat policy ...` work as written.
install -m 0755 target/release/moat /usr/local/bin/moat
exec /usr/local/bin/moat up "$@"
