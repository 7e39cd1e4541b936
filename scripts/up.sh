#!/usr/bin/env bash
# The run command from the README: builds moat, sets up its PKI under the
# state root (default /var/lib/moat) with a client bundle for the admin,
# starts the engine on /run/moat/engine.sock, and makes a busybox image
# available offline. Ctrl-C stops the engine (containers keep running).
# Running it again reuses what exists.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release --locked -p moat
moat=$PWD/target/release/moat
state=${MOAT_STATE_ROOT:-/var/lib/moat}
socket=${MOAT_ENGINE_SOCKET:-/run/moat/engine.sock}
export MOAT_STATE_ROOT=$state
if [[ ! -e $state/pki/ca.pem ]]; then
  "$moat" certs init --host localhost --host "$(hostname)" --ip 127.0.0.1
fi
"$moat" certs issue admin --group admin --out "$state/clients/admin" >/dev/null
echo "admin client bundle: $state/clients/admin"

"$moat" engine --socket "$socket" &
engine=$!
trap 'kill $engine 2>/dev/null; wait $engine 2>/dev/null' INT TERM EXIT
for _ in $(seq 100); do
  [[ -S $socket ]] && docker -H "unix://$socket" version >/dev/null 2>&1 && break
  sleep 0.1
done
if ! docker -H "unix://$socket" image inspect busybox:test >/dev/null 2>&1; then
  rootfs=$(mktemp -d)
  "$moat" busybox-rootfs "$rootfs"
  tar -C "$rootfs" -c . | docker -H "unix://$socket" import - busybox:test >/dev/null
  rm -rf "$rootfs"
  echo "imported busybox:test (from the host's busybox-static)"
fi
cat <<MSG

moat engine is running. Try:
  docker -H unix://$socket run --rm busybox:test echo hello

Ctrl-C stops the engine; containers keep running.
MSG
wait $engine
