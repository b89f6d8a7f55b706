"""`python -m dr.list`: every snapshot, local (``.talos/snapshots/``) and in the bucket, in one table, newest first.

    python -m dr.list              # the newest 20 (S3 metadata and tags are read for the rows shown only)
    python -m dr.list --limit 0    # all of them
    python -m dr.list --json

Columns: name, where (local / s3 / both), size, age (from the name's timestamp), etcd revision and when it was last
verified (`python -m dr.verify`), when known: for S3 from the object's metadata and tags, for local files from
``.verified.json`` in the snapshots folder. Files and objects whose names are not snapshot names are ignored.
Finding no snapshot at all exits 4 (NOT_FOUND): there is nothing to restore.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from dr.adapters import s3
from dr.commands import cli
from dr.commands.settings import Resolver, add_common_flags
from dr.commands.verify import catalog_entry_for, load_catalog
from dr.core import naming, timefmt
from dr.core.errors import ConfigError, DRError, SnapshotNotFound

PROG = "dr.list"
DEFAULT_LIMIT = 20


@dataclass
class Row:
    name: str
    taken_at: str
    where: str  # local | s3 | both
    size: int
    local_path: str | None = None
    s3_uri: str | None = None
    s3_size: int | None = None
    revision: int | None = None
    verified_at: str | None = None  # newest of the local and S3 records
    local_verified_at: str | None = None
    s3_verified_at: str | None = None
    verified_keys: int | None = None
    pre_restore: bool = False


def local_snapshots(folder: Path) -> list[tuple[Path, datetime]]:
    """Snapshot files in ``folder`` (regular files with snapshot names; ``.part`` and other names ignored)."""
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        ts = naming.parse_snapshot_name(p.name)
        if ts is not None and p.is_file() and not p.is_symlink():
            out.append((p, ts))
    return out


def build_rows(local: list[tuple[Path, datetime]], catalog: dict[str, dict[str, Any]],
               remote: list[s3.RemoteSnapshot]) -> list[Row]:
    """One row per snapshot name, newest first (pure: no I/O beyond ``stat`` of the local files)."""
    rows: dict[str, Row] = {}
    for p, ts in local:
        st = p.stat()
        entry = catalog_entry_for(p, catalog) or {}
        rows[p.name] = Row(
            name=p.name, taken_at=timefmt.iso_utc(ts), where="local", size=st.st_size, local_path=str(p),
            revision=entry.get("revision"), local_verified_at=entry.get("verified_at"),
            verified_keys=entry.get("keys"), pre_restore=naming.is_safety_snapshot(p.name),
        )
    for o in remote:  # newest first; a name seen twice (two prefixes) keeps the newest object
        row = rows.get(o.name)
        if row is None:
            rows[o.name] = Row(name=o.name, taken_at=timefmt.iso_utc(o.taken_at), where="s3", size=o.size, s3_uri=o.uri,
                               s3_size=o.size, pre_restore=naming.is_safety_snapshot(o.name))
        elif row.s3_uri is None:
            row.where, row.s3_uri, row.s3_size = "both", o.uri, o.size
    ordered = sorted(rows.values(), key=lambda r: (r.taken_at, r.name), reverse=True)
    for r in ordered:
        r.verified_at = max((v for v in (r.local_verified_at, r.s3_verified_at) if v), default=None)
    return ordered


def add_s3_facts(row: Row, info: s3.ObjectInfo) -> None:
    facts = s3.object_facts(info)
    if row.revision is None and "revision" in facts:
        row.revision = facts["revision"]
    row.s3_verified_at = facts.get(s3.TAG_VERIFIED_AT)
    if row.s3_verified_at and (row.verified_at is None or row.s3_verified_at > row.verified_at):
        row.verified_at = row.s3_verified_at
        keys = facts.get(s3.TAG_VERIFIED_KEYS)
        row.verified_keys = int(keys) if keys and str(keys).isdigit() else row.verified_keys


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _age(row: Row, now: datetime) -> str:
    ts = datetime.strptime(row.taken_at, timefmt.ISO_UTC_FORMAT).replace(tzinfo=UTC)
    return timefmt.human_age((now - ts).total_seconds())


def print_table(rows: list[Row], now: datetime, out: TextIO) -> None:
    print(f"{'NAME':<45} {'WHERE':<6} {'SIZE':>10} {'AGE':>7} {'REVISION':>9}  VERIFIED", file=out)
    for r in rows:
        size = cli.human_size(r.size)
        if r.where == "both" and r.s3_size is not None and r.s3_size != r.size:
            size += "!"
        rev = str(r.revision) if r.revision is not None else "-"
        ver = r.verified_at or "never"
        if r.verified_at and r.verified_keys is not None:
            ver += f" ({r.verified_keys} keys)"
        print(f"{r.name:<45} {r.where:<6} {size:>10} {_age(r, now):>7} {rev:>9}  {ver}", file=out)


@dataclass
class _S3Listing:
    where: str | None = None  # s3://bucket/prefix; None when no bucket is configured
    client: Any = None
    snapshots: list[s3.RemoteSnapshot] = field(default_factory=list)
    failure: DRError | None = None  # reported last, after whatever the local folder holds


def _list_s3(r: Resolver, notes: list[str]) -> _S3Listing:
    listing = _S3Listing()
    try:
        bucket, prefix = r.bucket, r.prefix
    except ConfigError as exc:
        notes.append(f"S3 not checked: no bucket configured ({exc.message}); pass --bucket or set DR_BUCKET")
        return listing
    listing.where = f"s3://{bucket}/{prefix}"
    try:
        listing.client = r.s3_client()
        listing.snapshots = s3.list_snapshots(listing.client, bucket, prefix)
    except DRError as exc:
        listing.failure = exc
    return listing


def _add_s3_metadata(shown: list[Row], listing: _S3Listing, notes: list[str]) -> None:
    """Read each shown S3 object's metadata and tags (only for the rows shown: one request each)."""
    if listing.where is None or listing.failure is not None:
        return
    for row in shown:
        if row.s3_uri:
            bucket, key = s3.parse_s3_uri(row.s3_uri)
            try:
                add_s3_facts(row, s3.head_snapshot(listing.client, bucket, key))
            except DRError as exc:
                notes.append(f"could not read metadata of {row.s3_uri}: {exc}")


def _add_table_notes(rows: list[Row], shown: list[Row], notes: list[str]) -> None:
    if any(x.where == "both" and x.s3_size != x.size for x in shown):
        notes.append("a size marked ! differs between the local file and the S3 object: they are not the same "
                     "snapshot; verify both with `python -m dr.verify`")
    if len(rows) > len(shown):
        notes.append(f"showing the newest {len(shown)} of {len(rows)}; `--limit 0` shows all "
                     "(S3 metadata is read only for the rows shown)")


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
         now: Callable[[], datetime] | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    clock = now or (lambda: datetime.now(UTC))
    p = cli.parser(PROG, "List local and S3 etcd snapshots in one table, newest first.")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT, metavar="N",
                   help=f"show the newest N (default {DEFAULT_LIMIT}; 0 = all); S3 metadata and tags are read for "
                        "the rows shown only")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    add_common_flags(p)
    args = p.parse_args(argv)

    def body() -> int:
        if args.limit < 0:
            raise ConfigError(f"--limit must be 0 or more, not {args.limit}", "pass e.g. --limit 50, or 0 for all")
        r = Resolver(args)
        notes: list[str] = []
        local = local_snapshots(r.snapshots_dir)
        catalog = load_catalog(r.snapshots_dir)
        listing = _list_s3(r, notes)
        where_s3, s3_failure = listing.where, listing.failure
        rows = build_rows(local, catalog, listing.snapshots)
        shown = rows if args.limit == 0 else rows[: args.limit]
        _add_s3_metadata(shown, listing, notes)
        n_local = sum(1 for x in rows if x.where in ("local", "both"))
        n_s3 = sum(1 for x in rows if x.where in ("s3", "both"))
        sources = f"{r.snapshots_dir}" + (f" and {where_s3}" if where_s3 else "")
        _add_table_notes(rows, shown, notes)
        if args.json:
            print(json.dumps({"local_dir": str(r.snapshots_dir), "s3": where_s3, "total": len(rows),
                              "local": n_local, "in_s3": n_s3, "shown": len(shown),
                              "snapshots": [asdict(x) for x in shown], "notes": notes,
                              "error": str(s3_failure) if s3_failure else None}, indent=2), file=out)
        elif rows:
            print(f"{_plural(len(rows), 'snapshot')} ({n_local} local in {r.snapshots_dir}, {n_s3} in "
                  f"{where_s3 or 'S3 (not checked)'}), newest first:", file=out)
            print_table(shown, clock(), out)
        for note in notes:
            print(f"note: {note}", file=err)
        if s3_failure is not None:
            raise s3_failure
        if not rows:
            if not args.json:
                print("no snapshots", file=out)
            raise SnapshotNotFound(f"no snapshots in {sources}",
                                   "take one now with `python -m dr.backup --save-to-s3`")
        return 0

    return cli.run(PROG, body, debug=args.debug, err=err)
