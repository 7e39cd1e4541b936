#!/usr/bin/env bash
# Installs the Debian packages moat's build and tests need, when missing.
# Safe to run again: it does nothing when everything is there.
set -euo pipefail

packages=(
  pkg-config libseccomp-dev # libcontainer's seccomp support
  busybox-static            # the rootfs of test images
  tini                      # docker-init for --init
  gcc libc6-dev             # static probes the security tests run in containers
  openssl                   # interop checks of the PKI
  curl                      # raw HTTP requests in the tests
  skopeo umoci              # OCI image interop checks
  bsdutils                  # `script`, a pty for `docker run -it` in the tests
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "moat needs these Debian packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# docker-py, the second real client the tests drive (from PyPI).
if ! python3 -c 'import docker' 2>/dev/null; then
  echo "installing docker-py"
  python3 -m pip install --quiet --disable-pip-version-check docker
fi
