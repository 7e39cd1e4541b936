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
  docker-registry           # distribution 2.8: the registry pull/push tests start
  apache2-utils             # htpasswd -B for that registry's basic auth
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
  # No service is started by the packages (docker-registry has one): the
  # tests start their own registries.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
  else
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# dockerd 20.10 (Debian's docker.io): the interop test loads what a real
# dockerd saves, and the benchmark runs against it. Installed without
# starting its service: the test and the harness each start their own, on
# their own socket, and stop it after.
if ! command -v dockerd >/dev/null; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "moat needs Debian's docker.io (dockerd) (run as root, or install it)" >&2
    exit 1
  fi
  echo "installing: docker.io (its service is not started)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d answering 101 tells the package scripts not to start it.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi

# docker-py, the second real client the tests drive (from PyPI).
if ! python3 -c 'import docker' 2>/dev/null; then
  echo "installing docker-py"
  python3 -m pip install --quiet --disable-pip-version-check docker
fi
