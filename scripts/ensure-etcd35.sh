#!/usr/bin/env bash
# Unpacks Debian trixie's etcd 3.5 (etcd-server + etcd-client: etcd, etcdctl, etcdutl) into a cache folder, without
# touching the machine's apt configuration: a private sources file (the machine's own Debian URI and keyring, suite
# trixie), private lists and cache, `apt-get download`, then `dpkg -x`. Nothing is installed system-wide.
#
# Where: ${DR_ETCD35_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/talos-dr/etcd-3.5/bin} gets etcd, etcdctl, etcdutl and
# VERSION, the same default as dr.etcdlocal.etcd35_bin_dir(). Idempotent: exits at once when etcdutl there already
# reports 3.5.x. Talos v1.13.9 runs etcd 3.6; 3.5 is the closest Debian packages, and it has etcdutl.
set -euo pipefail
BIN="${DR_ETCD35_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/talos-dr/etcd-3.5/bin}"
SUITE="${DR_ETCD35_SUITE:-trixie}"

have35() {
  [ -x "$BIN/etcd" ] && [ -x "$BIN/etcdctl" ] && [ -x "$BIN/etcdutl" ] &&
    "$BIN/etcdutl" version 2>/dev/null | grep -q '^etcdutl version: 3\.5\.'
}
if have35; then
  exit 0
fi
command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 || {
  echo "etcd 3.5: apt-get and dpkg are needed to unpack Debian's etcd 3.5 into $BIN" >&2; exit 1; }

# The machine's own Debian mirror and keyring: the first deb822 stanza (sources.list.d/*.sources) or one-line entry
# (sources.list) whose URI ends in /debian. No host name is written here.
read -r URI KEYRING < <(python3 - <<'PY'
import glob, re
uri = key = ""
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip()
        uris = [u for u in fields.get("uris", "").split() if u.rstrip("/").endswith("/debian")]
        if uris and "deb" in fields.get("types", "deb").split():
            uri, key = uris[0], fields.get("signed-by", "")
            break
    if uri:
        break
if not uri:
    try:
        for line in open("/etc/apt/sources.list"):
            m = re.match(r"\s*deb\s+(?:\[([^\]]*)\]\s+)?(\S+)", line)
            if m and m.group(2).rstrip("/").endswith("/debian"):
                uri = m.group(2)
                k = re.search(r"signed-by=(\S+)", m.group(1) or "")
                key = k.group(1) if k else ""
                break
    except OSError:
        pass
print(uri or "-", key if key and "\n" not in key else "-")
PY
)
if [ "$URI" = "-" ]; then
  echo "etcd 3.5: no Debian mirror (a URI ending in /debian) in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list" >&2
  exit 1
fi

echo "etcd 3.5: downloading etcd-server and etcd-client from Debian $SUITE into $BIN (about 30 s, once) ..."
mkdir -p "$(dirname "$BIN")"
WORK="$BIN.tmp.$$"
trap 'rm -rf "$WORK"' EXIT
rm -rf "$WORK"
mkdir -p "$WORK/srcparts" "$WORK/lists/partial" "$WORK/cache/archives/partial" "$WORK/debs"
{
  echo "Types: deb"
  echo "URIs: $URI"
  echo "Suites: $SUITE"
  echo "Components: main"
  if [ "$KEYRING" != "-" ]; then echo "Signed-By: $KEYRING"; fi
} >"$WORK/srcparts/$SUITE.sources"
APT=(apt-get -q -o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$WORK/srcparts"
     -o "Dir::State::Lists=$WORK/lists" -o "Dir::Cache=$WORK/cache" -o "Debug::NoLocking=1")
# A fresh machine (and these private lists always) needs the package lists first.
"${APT[@]}" update >"$WORK/apt-update.log" 2>&1 || { cat "$WORK/apt-update.log" >&2; exit 1; }
(cd "$WORK/debs" && "${APT[@]}" download etcd-server etcd-client >"$WORK/apt-download.log" 2>&1) ||
  { cat "$WORK/apt-download.log" >&2; exit 1; }
for deb in "$WORK"/debs/*.deb; do
  dpkg -x "$deb" "$WORK/root"
done
[ -x "$WORK/root/usr/bin/etcdutl" ] || { echo "etcd 3.5: the $SUITE packages hold no usr/bin/etcdutl" >&2; exit 1; }
"$WORK/root/usr/bin/etcdutl" version | grep -q '^etcdutl version: 3\.5\.' ||
  { echo "etcd 3.5: $SUITE's etcdutl is not 3.5: $("$WORK/root/usr/bin/etcdutl" version | head -1)" >&2; exit 1; }
"$WORK/root/usr/bin/etcdutl" version | head -1 | sed 's/^etcdutl version: //' >"$WORK/root/usr/bin/VERSION"
rm -rf "$BIN"
mkdir -p "$BIN"
for f in etcd etcdctl etcdutl VERSION; do
  mv "$WORK/root/usr/bin/$f" "$BIN/$f"
done
echo "etcd 3.5: $(cat "$BIN/VERSION") in $BIN"
