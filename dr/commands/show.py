"""`talos-dr show SNAPSHOT`: what a snapshot holds, by Kubernetes resource type and namespace, before betting on it.

    talos-dr show latest                              # the newest snapshot in the bucket
    talos-dr show latest --namespace demo --type secrets,configmaps
    talos-dr show etcd-snapshot-20260101T000000Z.db --json

The snapshot is resolved as verify and restore resolve it (a file, s3://, a listed name, latest, latest~N), its
SHA-256 trailer checked, and read straight from its file (dr.adapters.snapshot_reader): no etcd is started and
nothing is decoded beyond the first bytes of each value (docs/INSIDE.md).

This module also holds what diff and extract share: ``opened`` (a snapshot, or ``live``: a fresh one from the node,
0600 in a private folder that is removed when the command ends).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from dr.adapters import fsutil
from dr.adapters.snapshot_reader import SnapshotReader
from dr.commands import cli
from dr.commands.settings import Resolver, add_common_flags
from dr.commands.source import Fetched, fetch
from dr.core import inventory, naming, spelling
from dr.core.integrity import SnapshotDigest
from dr.core.timefmt import iso_utc

PROG = spelling.command("show")
LIVE = "live"
LIVE_STALL = 30.0
TOP = 10


@dataclass
class Opened:
    spec: str
    origin: str  # what was read: a path, s3://..., or "node <ip> (live)"
    taken_at: datetime | None
    size: int
    sha256: str
    reader: SnapshotReader
    fetched: Fetched | None = None


def taken_at(f: Fetched) -> datetime:
    """When it was taken: what its name says (dr's and talos-backup's names carry the time), else the file's mtime."""
    parsed = f.entry.name if f.entry is not None and f.entry.name.scheme != "unknown" else naming.parse(f.path.name)
    return parsed.taken_at if parsed else datetime.fromtimestamp(f.path.stat().st_mtime, UTC)


def take_live(r: Resolver, folder: Path, err: TextIO, stall: float = LIVE_STALL, prog: str = PROG
              ) -> tuple[Path, SnapshotDigest]:
    """A fresh snapshot from the node through the Talos API (as `talos-dr backup` takes one), into ``folder``
    (0600 from the first byte; the hash trailer checked as the stream ends)."""
    from dr.commands.backup import talos_client

    client = talos_client(r, stall)
    path = folder / "live-etcd-snapshot.db"
    digests: list[SnapshotDigest] = []
    print(f"{prog}: taking a fresh snapshot from node {client.node} to compare with (removed when done) ...",
          file=err, flush=True)
    with fsutil.atomic_writer(path, mode=0o600, overwrite=False, fsync_dir=False) as f:
        for chunk in client.iter_etcd_snapshot(digests):
            f.write(chunk)
    return path, digests[0]


@contextmanager
def opened(spec: str, r: Resolver, err: TextIO, base: Path | None = None) -> Iterator[Opened]:
    """``spec`` read from its file (downloaded or decoded into a private temporary folder first when needed); the
    folder and everything in it is removed when the block ends, also on errors and Ctrl-C."""
    base = base or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="dr-inside-", dir=base))  # mode 0700
    try:
        if spec == LIVE:
            path, digest = take_live(r, folder, err)
            now = datetime.now(UTC)
            with SnapshotReader(path, label=f"the live snapshot of node {r.node}") as reader:
                yield Opened(spec, f"node {r.node} (live)", now, digest.size, digest.content_sha256, reader)
            return
        f = fetch(spec, r, folder, err)
        with SnapshotReader(f.path, label=f.origin) as reader:
            yield Opened(spec, f.origin, taken_at(f), f.digest.size, f.digest.content_sha256, reader, f)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def objects(reader: SnapshotReader) -> Iterator[inventory.Obj]:
    for live, value in reader.items():
        yield inventory.Obj(inventory.parse_key(live.key), len(value), inventory.encoding(value), live.mod_revision)


def digests(reader: SnapshotReader) -> Iterator[tuple[bytes, bytes]]:
    """(key, SHA-256 of its value) in key order, for inventory.diff."""
    for live, value in reader.items():
        yield live.key, inventory.digest(value)


def split_list(values: list[str] | None) -> set[str] | None:
    if not values:
        return None
    return {v.strip() for item in values for v in item.split(",") if v.strip()}


def add_filters(p) -> None:
    p.add_argument("--namespace", "-n", action="append", metavar="NS",
                   help="only this namespace (repeat or comma-separate; `(cluster)` for cluster-scoped objects)")
    p.add_argument("--type", "-t", action="append", metavar="TYPE",
                   help="only this resource type, e.g. secrets,configmaps (repeat or comma-separate)")
    p.add_argument("--tmp-dir", help="where a downloaded or live snapshot is kept while it is read (default: $TMPDIR "
                                     "or /tmp); removed afterwards")


def quota_line(size: int) -> str:
    share = size / inventory.ETCD_QUOTA_DEFAULT
    warn = "; near the quota: etcd stops taking writes (NOSPACE) when its database reaches it" if share >= 0.8 else ""
    return (f"{cli.human_size(size)}, {share:.1%} of etcd's default 2 GiB quota (--quota-backend-bytes; Talos does "
            f"not change it){warn}")


def report(o: Opened, inv: inventory.Inventory, filters: dict) -> dict:
    r = o.reader
    return {"ok": True, "snapshot": o.origin, "taken_at": iso_utc(o.taken_at) if o.taken_at else None,
            "size": o.size, "sha256": o.sha256, "quota_bytes": inventory.ETCD_QUOTA_DEFAULT,
            "quota_share": round(o.size / inventory.ETCD_QUOTA_DEFAULT, 6), "revision": r.revision,
            "compacted_revision": r.store.compacted, "revisions_kept": r.store.revisions, "keys": len(r.keys),
            "filters": filters, **inv.to_json()}


def print_text(o: Opened, inv: inventory.Inventory, filters: dict, out: TextIO) -> None:
    r = o.reader
    when = iso_utc(o.taken_at) if o.taken_at else "unknown"
    print(f"snapshot  {o.origin}", file=out)
    print(f"taken     {when}", file=out)
    print(f"revision  {r.revision} ({'compacted at ' + str(r.store.compacted) if r.store.compacted else 'never compacted'}; {r.store.revisions} revisions kept "
          f"for {len(r.keys)} live keys)", file=out)
    print(f"size      {quota_line(o.size)}", file=out)
    shown = ", ".join(f"{k} {','.join(sorted(v))}" for k, v in filters.items() if v)
    print(f"objects   {inv.objects} ({cli.human_size(inv.bytes)} of values){' where ' + shown if shown else ''}"
          + (f"; {inv.outside_keys} keys outside /registry/" if inv.outside_keys else ""), file=out)
    if inv.encodings:
        print("stored as " + ", ".join(f"{k} {v}" for k, v in sorted(inv.encodings.items())), file=out)
    if not inv.objects:
        print("\nno Kubernetes objects match" if shown else "\nno Kubernetes objects in it", file=out)
        return
    print(f"\n  {'resource type':<40} {'objects':>8} {'bytes':>10}", file=out)
    for t, tally in inv.by_type.items():
        print(f"  {t:<40} {tally.count:>8} {cli.human_size(tally.bytes):>10}", file=out)
    print(f"\n  {'namespace':<40} {'objects':>8} {'bytes':>10}", file=out)
    for ns, tally in inv.by_namespace.items():
        print(f"  {ns:<40} {tally.count:>8} {cli.human_size(tally.bytes):>10}", file=out)
    print(f"\n  biggest objects ({len(inv.biggest)})", file=out)
    for b in inv.biggest:
        print(f"  {cli.human_size(b.size):>10}  {b.ref}  [{b.encoding}]", file=out)


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(PROG, "What a snapshot holds: when and where it was taken, its revision, its size against etcd's "
                         "quota, and its Kubernetes objects by type and namespace (counts, sizes, the biggest). "
                         "Read from the file itself; no etcd is started.", examples=(
                             f"{PROG} latest",
                             f"{PROG} latest --namespace demo --type secrets,configmaps",
                             f"{PROG} etcd-snapshot-20260101T000000Z.db --json",
                         ))
    p.add_argument("snapshot", help="a name `list` prints, a local file, s3://bucket/key, `latest`, `latest~N`, "
                                    "`latest-verified`, or `live` (a fresh snapshot from the node)")
    add_filters(p)
    p.add_argument("--top", type=int, default=TOP, help=f"how many of the biggest objects to list (default {TOP})")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout (also on failure)")
    add_common_flags(p)
    return p


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Print what a snapshot holds."""
    r = Resolver(args)
    namespaces, types = split_list(args.namespace), split_list(args.type)
    types = inventory.normalise_types(types) if types else None
    filters = {"namespace": sorted(namespaces or []), "type": sorted(types or [])}
    with opened(args.snapshot, r, err, Path(args.tmp_dir) if args.tmp_dir else None) as o:
        inv = inventory.summarize(objects(o.reader), namespaces=namespaces, types=types, top=max(args.top, 0))
        if args.json:
            print(json.dumps(report(o, inv, filters), indent=2), file=out)
        else:
            print_text(o, inv, filters, out)
    return 0


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.execute(PROG, args, lambda o, e: run(args, o, e), out=out, err=err)
