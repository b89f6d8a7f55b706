#!/usr/bin/env bash
# Installs Debian's etcd (server and client, 3.4) when etcd or etcdctl is missing, then unpacks etcd 3.5 (with
# etcdutl, the tool Talos's etcd 3.6 needs for snapshot status/restore) into a cache folder: scripts/ensure-etcd35.sh.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! { command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1; }; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "etcd is missing and I am not root: install etcd-server and etcd-client, then rerun" >&2; exit 1; }
    SUDO="sudo"
  fi
  echo "make etcd: installing etcd-server and etcd-client from Debian's packages (about a minute, once)..."
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null
  # The package may start a system etcd on 2379; the project never uses it (every etcd here is on a free port).
  command -v etcd >/dev/null && command -v etcdctl >/dev/null
fi
# etcd 3.5 is required in CI (the tests that need it fail there without it); elsewhere a failure is a warning and
# those tests skip.
if ! bash "$HERE/ensure-etcd35.sh"; then
  case "${CI:-}" in
    1|true|TRUE|True|yes) echo "etcd 3.5 could not be unpacked (required with CI=true)" >&2; exit 1 ;;
    *) echo "warning: etcd 3.5 could not be unpacked; the tests that need it will skip" >&2 ;;
  esac
fi
