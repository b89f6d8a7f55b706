#!/usr/bin/env bash
# Installs Debian's `age` and `zstd` CLIs when missing: the tests check that what dr.backup writes is what
# `age -d | zstd -d` reads, and that what `zstd | age -r` writes (as siderolabs/talos-backup does) dr.verify proves.
set -euo pipefail
missing=()
command -v age >/dev/null 2>&1 && command -v age-keygen >/dev/null 2>&1 || missing+=(age)
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "${missing[*]} missing and I am not root: install them (apt-get install ${missing[*]}), then rerun" >&2; exit 1; }
  SUDO="sudo"
fi
echo "make tools: installing ${missing[*]} from Debian's packages (under a minute, once)..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
command -v age >/dev/null && command -v age-keygen >/dev/null && command -v zstd >/dev/null
