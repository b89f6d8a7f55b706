#!/usr/bin/env bash
# Builds the grpc-go apid stand-in (sandbox/goapid/main.go) into a cache folder, offline, from Debian's packages:
# golang-go, golang-google-grpc-dev and golang-google-protobuf-dev (installed with apt-get when missing), in GOPATH
# mode over /usr/share/gocode with modules off, so nothing is downloaded from the Go module proxy.
#
# Where: ${DR_GOAPID_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/talos-dr/goapid/goapid} (sandbox.goapid.binary() reads the
# same default). Idempotent: rebuilt only when main.go changed (its SHA-256 is kept beside the binary).
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
SRC="$HERE/sandbox/goapid/main.go"
BIN="${DR_GOAPID_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/talos-dr/goapid/goapid}"
GOCODE=/usr/share/gocode
PKGS=(golang-go golang-google-grpc-dev golang-google-protobuf-dev)

want="$(sha256sum "$SRC" | cut -d' ' -f1)"
if [ -x "$BIN" ] && [ "$(cat "$BIN.sha256" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

have_sources() {
  command -v go >/dev/null 2>&1 && [ -d "$GOCODE/src/google.golang.org/grpc" ] &&
    [ -d "$GOCODE/src/google.golang.org/protobuf/encoding/protowire" ]
}
if ! have_sources; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "the grpc-go apid stand-in needs ${PKGS[*]} and I am not root: apt-get install ${PKGS[*]}, then rerun" >&2
      exit 1; }
    SUDO="sudo"
  fi
  echo "installing ${PKGS[*]} from Debian's packages (for the grpc-go apid stand-in)..."
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
  have_sources || { echo "go or the grpc-go sources are still missing after apt-get install ${PKGS[*]}" >&2; exit 1; }
fi

mkdir -p "$(dirname "$BIN")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Modules off: imports resolve in GOPATH (Debian's /usr/share/gocode); a private build cache; no network.
GO111MODULE=off GOPATH="$GOCODE" GOFLAGS= GOPROXY=off GOCACHE="$(dirname "$BIN")/gocache" CGO_ENABLED=0 \
  go build -o "$tmp/goapid" "$SRC"
mv "$tmp/goapid" "$BIN"
echo "$want" > "$BIN.sha256"
echo "built $BIN ($(go version | cut -d' ' -f3), grpc-go from Debian's golang-google-grpc-dev)"
