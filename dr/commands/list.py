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

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from dr.adapters.stack_outputs import OUTPUTS_FILE_ENV
from dr.adapters.store import Entry, S3Store, latest_steps
from dr.commands import cli
from dr.commands.settings import DOWNLOADS, ENV_BUCKET, Resolver, add_common_flags
from dr.core import naming, spelling, timefmt
from dr.core.errors import ConfigError, DRError, SnapshotNotFound

PROG = spelling.command("list")
DEFAULT_LIMIT = 20


@dataclass
class Row:
    name: str  # the plain snapshot's name (what a download becomes), or the stored name when that is ambiguous
    taken_at: str
    where: str  # local | s3 | both
    size: int  # bytes in the first place listed (the local file, else the stored object)
    local_path: str | None = None
    s3_uri: str | None = None
    s3_size: int | None = None  # stored bytes of the object (compressed and/or encrypted ones are smaller)
    s3_name: str | None = None  # the object's own name, e.g. etcd-snapshot-<ts>.db.zst.age
    format: str = "plain"  # of the S3 object (local files are plain, or say so)
    scheme: str = naming.DR  # dr | talos-backup
    cluster: str | None = None
    plain_size: int | None = None  # the plaintext's size recorded with the object
    revision: int | None = None
    verified_at: str | None = None  # newest of the local and S3 records
    local_verified_at: str | None = None
    s3_verified_at: str | None = None
    verified_keys: int | None = None
    pre_restore: bool = False
    downloaded: bool = False  # the local copy is one a restore downloaded (in <snapshots>/downloads)
    same_plain_name: bool = False  # another S3 object decodes to the same plain name: this row is its stored name
    _s3_entry: Entry | None = field(default=None, repr=False)


def _row_json(row: Row, now: datetime | None = None) -> dict[str, Any]:
    d = asdict(row)
    d.pop("_s3_entry", None)
    if now is not None:  # the AGE column, for scripts: no date arithmetic needed
        taken = datetime.strptime(row.taken_at, timefmt.ISO_UTC_FORMAT).replace(tzinfo=UTC)
        d["age_seconds"] = int((now - taken).total_seconds())
    return d


def build_rows(local: list[Entry], remote: list[Entry]) -> list[Row]:
    """One row per snapshot (by its plain name), newest first. ``local`` entries are described (catalog read)."""
    rows: dict[str, Row] = {}
    for e in local:
        v = e.verification
        prev = rows.get(e.name.plain)
        if prev is not None and not prev.downloaded:
            continue  # a snapshot taken here wins over a download of the same name
        rows[e.name.plain] = Row(
            name=e.name.plain, taken_at=timefmt.iso_utc(e.name.taken_at), where="local", size=e.size,
            local_path=e.location, format=e.format, scheme=e.name.scheme, cluster=e.name.cluster,
            revision=v.revision if v else None, local_verified_at=v.verified_at if v else None,
            verified_keys=v.keys if v else None, pre_restore=e.name.safety,
            downloaded=e.path is not None and e.path.parent.name == DOWNLOADS,
        )
    stored_as: dict[str, set[str]] = {}
    for o in remote:
        stored_as.setdefault(o.name.plain, set()).add(o.name.name)
    for o in remote:  # newest first
        # `X.db` and `X.db.zst` both stored: two snapshots, one row each under its stored name (the plain name is
        # ambiguous, and verify/restore refuse it: store.find; hostile-inputs 22).
        ambiguous = len(stored_as[o.name.plain]) > 1
        key = o.name.name if ambiguous else o.name.plain
        row = rows.get(key)
        if row is None:
            rows[key] = Row(name=key, taken_at=timefmt.iso_utc(o.name.taken_at), where="s3",
                            size=o.size, s3_uri=o.location, s3_size=o.size, s3_name=o.name.name,
                            format=o.format, scheme=o.name.scheme, cluster=o.name.cluster,
                            pre_restore=o.name.safety, _s3_entry=o, same_plain_name=ambiguous)
        elif row.s3_uri is None:
            row.where, row.s3_uri, row.s3_size, row.s3_name, row.format = "both", o.location, o.size, o.name.name, o.format
            row._s3_entry, row.same_plain_name = o, ambiguous
    ordered = sorted(rows.values(), key=lambda r: (r.taken_at, r.name), reverse=True)
    for r in ordered:
        r.verified_at = max((v for v in (r.local_verified_at, r.s3_verified_at) if v), default=None)
    return ordered


def add_s3_facts(row: Row, entry: Entry) -> None:
    if row.revision is None and entry.revision is not None:
        row.revision = entry.revision
    row.plain_size = entry.plain_size
    if entry.cluster:
        row.cluster = entry.cluster
    v = entry.verification
    row.s3_verified_at = v.verified_at if v else None
    if row.s3_verified_at and (row.verified_at is None or row.s3_verified_at > row.verified_at):
        row.verified_at = row.s3_verified_at
        row.verified_keys = v.keys if v and v.keys is not None else row.verified_keys


def _sizes_differ(r: Row) -> bool:
    if r.where != "both":
        return False
    plain = r.plain_size if r.plain_size is not None else (r.s3_size if r.format == "plain" else None)
    return plain is not None and plain != r.size


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _age(row: Row, now: datetime) -> str:
    ts = datetime.strptime(row.taken_at, timefmt.ISO_UTC_FORMAT).replace(tzinfo=UTC)
    return timefmt.human_age((now - ts).total_seconds())


def print_table(rows: list[Row], now: datetime, out: TextIO, latest_of: str | None = None,
                steps: dict[str, str] | None = None) -> None:
    """``steps``: S3 name -> ``latest~N`` (store.latest_steps), marked so the row `restore latest~1` takes is seen."""
    names = {id(r): cli.printable(r.name) for r in rows}  # S3 keys may carry ESC or bidi overrides
    width = max([45, *(len(n) for n in names.values())])
    print(f"{'NAME':<{width}} {'WHERE':<6} {'FORMAT':<8} {'SIZE':>10} {'AGE':>7} {'REVISION':>9}  VERIFIED", file=out)
    for r in rows:
        size = cli.human_size(r.size)
        if _sizes_differ(r):
            size += "!"
        rev = str(r.revision) if r.revision is not None else "-"
        ver = r.verified_at or "never"
        if r.verified_at and r.verified_keys is not None:
            ver += f" ({r.verified_keys} keys)"
        where = r.where + ("*" if r.downloaded else "")
        mark = "  <- latest" if latest_of and r.s3_name and latest_of.rsplit("/", 1)[-1] == r.s3_name else ""
        step = (steps or {}).get(r.s3_name or "")
        if step and (step != "latest" or not latest_of):
            mark = f"  <- {step}"
        print(f"{names[id(r)]:<{width}} {where:<6} {r.format:<8} {size:>10} {_age(r, now):>7} {rev:>9}  {ver}{mark}",
              file=out)


@dataclass
class _S3Listing:
    where: str | None = None  # s3://bucket/prefix; None when no bucket is configured
    store: S3Store | None = None
    snapshots: list[Entry] = field(default_factory=list)
    failure: DRError | None = None  # reported last, after whatever the local folder holds
    unchecked: str | None = None  # why S3 was not looked in
    latest: tuple[str, datetime] | None = None  # <prefix>latest: (key it copies, when)


def _list_s3(r: Resolver, notes: list[str]) -> _S3Listing:
    listing = _S3Listing()
    if (r._flag("outputs_file") or r.env.get(OUTPUTS_FILE_ENV)) and not (r._flag("bucket") or r.env.get(ENV_BUCKET)):
        _ = r.outputs  # an outputs file was named and is unusable: an error, never an empty list
    try:
        store = r.s3_store()
    except ConfigError as exc:
        listing.unchecked = exc.message
        notes.append(f"S3 not checked: no bucket configured ({exc.message}); pass --bucket or set DR_BUCKET")
        return listing
    listing.where, listing.store = store.where, store
    try:
        listing.snapshots = store.list()
        listing.latest = store.latest_alias()
    except DRError as exc:
        listing.failure = exc
    return listing


def _add_s3_metadata(shown: list[Row], listing: _S3Listing, notes: list[str]) -> None:
    """Read each shown S3 object's metadata and tags (only for the rows shown: one request each)."""
    if listing.store is None or listing.failure is not None:
        return
    for row in shown:
        if row._s3_entry is not None:
            try:
                add_s3_facts(row, listing.store.describe(row._s3_entry))
            except DRError as exc:
                notes.append(f"could not read metadata of {row.s3_uri}: {exc}")


def _add_table_notes(rows: list[Row], shown: list[Row], notes: list[str]) -> None:
    if any(_sizes_differ(x) for x in shown):
        notes.append("a size marked ! differs between the local file and the S3 object: they are not the same "
                     f"snapshot; verify both with `{spelling.command('verify')}`")
    if any(x.downloaded for x in shown):
        notes.append("local* marks copies a restore downloaded (in <snapshots>/downloads); "
                     f"`{spelling.command('backup')}` prunes them "
                     "with the others")
    if any(x.format not in ("plain", "zstd") for x in shown):
        notes.append("age-encrypted snapshots need their identity to verify or restore: --identity FILE "
                     "(or DR_AGE_IDENTITY_FILE)")
    clashes: dict[str, list[str]] = {}
    for x in rows:
        if x.same_plain_name and x._s3_entry is not None:
            clashes.setdefault(x._s3_entry.name.plain, []).append(x._s3_entry.name.name)
    for plain, stored in sorted(clashes.items()):
        names = ", ".join(cli.printable(n) for n in sorted(stored))
        notes.append(f"{cli.printable(plain)} is the name of {len(stored)} different snapshots in S3 ({names}), listed "
                     "under their stored names: name the one you mean that way (or by its s3:// URI) to verify, "
                     f"restore or extract it, e.g. `{spelling.command('verify', sorted(stored)[-1])}`")
    if len(rows) > len(shown):
        notes.append(f"showing the newest {len(shown)} of {len(rows)}; `--limit 0` shows all "
                     "(S3 metadata is read only for the rows shown)")


def _local_entries(r: Resolver, notes: list[str]) -> list[Entry]:
    entries: list[Entry] = []
    for store in (r.local_store(), r.downloads_store()):
        root = store.root
        if root.is_symlink() and not root.exists():
            notes.append(f"{root} is a dangling symbolic link (to {os.readlink(root)}): local snapshots not checked")
            continue
        if root.exists() and not root.is_dir():
            notes.append(f"{root} is not a folder: local snapshots not checked there")
            continue
        try:
            entries.extend(store.describe(e) for e in store.list())
        except PermissionError:
            notes.append(f"{root} cannot be read (permission denied): local snapshots not checked there")
    return entries


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(PROG, "List local and S3 etcd snapshots in one table, newest first.", examples=(
        f"{PROG}                       # the newest 20, local and in the stack's bucket",
        f"{PROG} --limit 0 --json      # all of them, for scripts",
        f"{PROG} --prefix my-cluster/  # talos-backup objects under their prefix",
    ))
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT, metavar="N",
                   help=f"show the newest N (default {DEFAULT_LIMIT}; 0 = all); S3 metadata and tags are read for "
                        "the rows shown only")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    add_common_flags(p)
    return p


def run(args: argparse.Namespace, out: TextIO, err: TextIO, clock: Callable[[], datetime]) -> int:
    """Print the local and S3 snapshots in one table (or one JSON document)."""
    if args.limit < 0:
        raise ConfigError(f"--limit must be 0 or more, not {args.limit}", "pass e.g. --limit 50, or 0 for all")
    r = Resolver(args)
    notes: list[str] = []
    local = _local_entries(r, notes)
    listing = _list_s3(r, notes)
    where_s3, s3_failure = listing.where, listing.failure
    rows = build_rows(local, listing.snapshots)
    shown = rows if args.limit == 0 else rows[: args.limit]
    _add_s3_metadata(shown, listing, notes)
    n_local = sum(1 for x in rows if x.where in ("local", "both"))
    n_s3 = sum(1 for x in rows if x.where in ("s3", "both"))
    sources = f"{r.snapshots_dir}" + (f" and {where_s3}" if where_s3 else "")
    _add_table_notes(rows, shown, notes)
    final: DRError | None = s3_failure
    if final is None and not rows:
        if listing.unchecked is not None:
            # Nothing here, and S3 was not looked in: that is not "nothing to restore".
            final = ConfigError(f"no snapshots in {r.snapshots_dir}, and S3 was not checked: no bucket configured "
                                f"({listing.unchecked})",
                                "pass --bucket NAME (or DR_BUCKET), or --outputs-file / --stack so the bucket is "
                                "known; then list again")
        else:
            final = SnapshotNotFound(f"no snapshots in {sources}",
                                     f"take one now with `{spelling.command('backup')} --save-to-s3`")
    if args.json:
        print(json.dumps({"ok": final is None, "local_dir": str(r.snapshots_dir), "s3": where_s3,
                          "total": len(rows), "local": n_local, "in_s3": n_s3, "shown": len(shown),
                          "snapshots": [_row_json(x, clock()) for x in shown], "notes": notes,
                          "latest": ({"copy_of": f"s3://{listing.store.bucket}/{listing.latest[0]}",
                                      "uri": f"{where_s3}latest", "copied_at": timefmt.iso_utc(listing.latest[1])}
                                     if listing.latest and listing.store else None),
                          "s3_not_checked": listing.unchecked,
                          "error": str(final) if final else None,
                          "exit_code": int(final.exit_code) if final else 0}, indent=2), file=out)
    elif rows:
        print(f"{_plural(len(rows), 'snapshot')} ({n_local} local in {r.snapshots_dir}, {n_s3} in "
              f"{where_s3 or 'S3 (not checked)'}), newest first:", file=out)
        print_table(shown, clock(), out, listing.latest[0] if listing.latest else None,
                    latest_steps(listing.snapshots, clock()))
        if listing.latest:
            print(f"{where_s3}latest is a pinned copy of {listing.latest[0].rsplit('/', 1)[-1]} (an alias, not "
                  "another snapshot; it never expires)", file=out)
    elif listing.unchecked is not None:
        print(f"no snapshots in {r.snapshots_dir}; S3 was not checked", file=out)
    else:
        print("no snapshots", file=out)
    for note in notes:
        if final is not None and listing.unchecked is not None and note.startswith("S3 not checked"):
            continue  # the error line says it (once is enough)
        print(f"note: {note}", file=err)
    if final is not None:
        raise final
    return 0


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
         now: Callable[[], datetime] | None = None) -> int:
    args = build_parser().parse_args(argv)
    clock = now or (lambda: datetime.now(UTC))
    return cli.execute(PROG, args, lambda o, e: run(args, o, e, clock), out=out, err=err)
