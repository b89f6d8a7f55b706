#!/usr/bin/env bash
# Installs Debian's etcd (server and client, 3.4) when etcd or etcdctl is missing.
set -euo pipefail
if command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "etcd is missing and I am not root: install etcd-server and etcd-client, then rerun" >&2; exit 1; }
  SUDO="sudo"
fi
echo "installing etcd-server and etcd-client from Debian's packages..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null
# The package may start a system etcd on 2379; the project never uses it (every etcd here is on a free port).
command -v etcd >/dev/null && command -v etcdctl >/dev/null
