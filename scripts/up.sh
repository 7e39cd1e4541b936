#!/usr/bin/env bash
# The run command from the README: builds moat and sets it up under the
# state root (default /var/lib/moat): a CA, the gateway's certificate, the
# audit key, a CRL, and a client bundle for the admin. Running it again
# reuses what exists.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release --locked -p moat
moat=target/release/moat
state=${MOAT_STATE_ROOT:-/var/lib/moat}
export MOAT_STATE_ROOT=$state
if [[ ! -e $state/pki/ca.pem ]]; then
  "$moat" certs init --host localhost --host "$(hostname)" --ip 127.0.0.1
fi
"$moat" certs issue admin --group admin --out "$state/clients/admin"
"$moat" certs list
