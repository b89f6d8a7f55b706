"""`python -m dr.verify`: prove a snapshot restores, by restoring it into a throwaway etcd and reading it back.

    python -m dr.verify latest                         # newest snapshot in the stack's bucket
    python -m dr.verify .talos/snapshots/etcd-snapshot-20260101T000000Z.db
    python -m dr.verify s3://bucket/snapshots/etcd-snapshot-....db --against latest --json

Checks, in order (the first failure stops and sets the exit code):
  1. integrity: the SHA-256 hash trailer, and for S3 the object's SHA-256 checksum and recorded SHA-256;
  2. database: `etcdutl snapshot status` (bbolt's consistency check, revision), or etcdctl's where it still has it
     (3.4, 3.5; etcd 3.6 removed it from etcdctl), see dr.adapters.etcdlocal;
  3. content: `etcdutl` (else etcdctl) `snapshot restore` into a temporary directory, a real etcd on free loopback
     ports, every key
     read back at the snapshot's revision and counted per Kubernetes resource type. The etcd is killed and the
     directory removed afterwards, also on errors and Ctrl-C.
A pass is recorded: on the S3 object as tags (verified-at, verified-revision, verified-keys), for a local file in
``.verified.json`` next to it. `python -m dr.list` shows both.

Resource types come from the key: ``/registry/<resource>/...``; ``/registry/<group>/<resource>/...`` (a first segment
with a dot, as CRDs and aggregated APIs use) is reported ``<resource>.<group>``; the API server's storage names
``minions``, ``services/specs`` and ``services/endpoints`` are reported as ``nodes``, ``services`` and ``endpoints``.
Keys outside ``/registry/`` are counted under ``(outside /registry)``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from dr.adapters.etcdlocal import KV, SnapshotStatus, ThrowawayEtcd, binaries, missing_hint, snapshot_status
from dr.adapters.store import CATALOG_NAME, Verification, open_store
from dr.commands import cli, source
from dr.commands.settings import Resolver, add_common_flags
from dr.commands.source import Fetched, fetch
from dr.core import naming, spelling
from dr.core.errors import CorruptSnapshot, DRError, EtcdMissing, IntegrityError, VerifyMismatch
from dr.core.timefmt import iso_utc

PROG = spelling.command("verify")
OUTSIDE = "(outside /registry)"
REGISTRY = b"/registry/"
# The API server stores these under names that are not the resource's name.
STORAGE_ALIASES = {"minions": "nodes", "services/specs": "services", "services/endpoints": "endpoints"}
EXAMPLES = 5  # example keys per type and change kind in the text output (JSON has up to JSON_EXAMPLES)
JSON_EXAMPLES = 50


# --- pure logic ------------------------------------------------------------------------------------------------


def resource_type(key: bytes) -> str:
    """The Kubernetes resource type a key belongs to (see the module docstring for the rules)."""
    if not key.startswith(REGISTRY):
        return OUTSIDE
    parts = key[len(REGISTRY):].decode("utf-8", "replace").split("/")
    first = parts[0]
    if first == "services" and len(parts) >= 3 and f"services/{parts[1]}" in STORAGE_ALIASES:
        return STORAGE_ALIASES[f"services/{parts[1]}"]
    if "." in first and len(parts) >= 3:
        return f"{parts[1]}.{first}"
    return STORAGE_ALIASES.get(first, first) or OUTSIDE


@dataclass
class Content:
    """What a snapshot holds, as read back from etcd."""

    revision: int = 0
    total_keys: int = 0
    registry_keys: int = 0
    resources: dict[str, int] = field(default_factory=dict)

    def add(self, key: bytes) -> None:
        self.total_keys += 1
        t = resource_type(key)
        if t != OUTSIDE:
            self.registry_keys += 1
        self.resources[t] = self.resources.get(t, 0) + 1

    def sorted_resources(self) -> dict[str, int]:
        return dict(sorted(self.resources.items(), key=lambda kv: (kv[0] == OUTSIDE, kv[0])))


@dataclass
class TypeDiff:
    added: int = 0
    removed: int = 0
    changed: int = 0
    unchanged: int = 0
    examples: dict[str, list[str]] = field(default_factory=lambda: {"added": [], "removed": [], "changed": []})

    def note(self, kind: str, key: bytes) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if kind != "unchanged" and len(self.examples[kind]) < JSON_EXAMPLES:
            self.examples[kind].append(key.decode("utf-8", "replace"))

    @property
    def differs(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def _value_hash(kv: KV) -> bytes:
    return hashlib.sha256(kv.value or b"").digest()


def diff_streams(new: Iterable[KV], base: Iterable[KV], new_content: Content, base_content: Content
                 ) -> dict[str, TypeDiff]:
    """Per resource type: keys added (in ``new`` only), removed (in ``base`` only) and changed (value hashes differ).

    Both streams must be in key order (etcd's range order); this is a merge, so memory does not grow with size.
    Fills both ``Content`` counts on the way."""
    diffs: dict[str, TypeDiff] = {}

    def d(key: bytes) -> TypeDiff:
        return diffs.setdefault(resource_type(key), TypeDiff())

    it_n: Iterator[KV] = iter(new)
    it_b: Iterator[KV] = iter(base)
    a = next(it_n, None)
    b = next(it_b, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a.key < b.key):
            assert a is not None
            new_content.add(a.key)
            d(a.key).note("added", a.key)
            a = next(it_n, None)
        elif a is None or b.key < a.key:
            base_content.add(b.key)
            d(b.key).note("removed", b.key)
            b = next(it_b, None)
        else:
            new_content.add(a.key)
            base_content.add(b.key)
            d(a.key).note("changed" if _value_hash(a) != _value_hash(b) else "unchanged", a.key)
            a, b = next(it_n, None), next(it_b, None)
    return dict(sorted(diffs.items(), key=lambda kv: (kv[0] == OUTSIDE, kv[0])))


# --- the command -----------------------------------------------------------------------------------------------


@dataclass
class Report:
    source: str
    ok: bool = False
    size: int = 0
    sha256: str = ""
    format: str = "plain"  # how it was stored: plain, zstd, age, zstd+age
    checks: list[str] = field(default_factory=list)
    revision: int = 0
    total_keys: int = 0
    registry_keys: int = 0
    db_entries: int = 0  # bbolt entries (snapshot status totalKey): every revision plus etcd's metadata
    tools: dict[str, str] = field(default_factory=dict)  # {"status": "etcdutl 3.5.16", "restore": ...}
    resources: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    verified_at: str = ""
    recorded: str = ""
    against: dict[str, Any] | None = None


def _now_text() -> str:
    return iso_utc(datetime.now(UTC))


def check_integrity(f: Fetched, report: Report, raw: bool = False) -> None:
    """What dr.commands.source and dr.adapters.store already proved, said out loud."""
    report.size, report.sha256 = f.digest.size, f.digest.content_sha256
    if raw:
        report.format = "data-dir copy"
        report.checks.append(f"a raw member/snap/db copy: NO hash trailer vouches for it (SHA-256 of the file "
                             f"{f.digest.content_sha256[:16]}…, {cli.human_size(f.digest.size)})")
        return
    report.format = f.layers.format if f.entry is not None else "plain"
    if f.layers.encrypted:
        report.checks.append("decrypted with the age identity (age's authenticated encryption: every 64 KiB chunk "
                             "checked)")
    if f.layers.compressed:
        report.checks.append("zstd-decompressed (frame checksum checked)")
    report.checks.append(f"hash trailer matches (SHA-256 {f.digest.content_sha256[:16]}…, "
                         f"{cli.human_size(f.digest.size)})")
    if f.entry is None:
        return
    recorded = f.entry.sha256
    if f.entry.s3_checksum:
        report.checks.append("stored bytes checked against the SHA-256 S3 recorded at upload")
    if recorded and recorded != f.digest.content_sha256 and f.entry.facts_from_tags and f.entry.s3_checksum:
        return  # a tag rewritten after upload: store.fetch checked the bytes against S3's checksum and warned
    if recorded and recorded != f.digest.content_sha256:  # store.fetch refuses this already; kept as a guard
        raise CorruptSnapshot(f"{f.origin} is not the snapshot that was uploaded: its SHA-256 "
                              f"{f.digest.content_sha256[:16]}… differs from the {recorded[:16]}… recorded at upload",
                              "use another snapshot; this object was replaced or damaged")
    if recorded:
        report.checks.append("SHA-256 recorded at upload matches")


def check_database(f: Fetched, report: Report) -> SnapshotStatus:
    status = snapshot_status(f.path)
    report.db_entries = status.total_keys or 0
    report.tools["status"] = f"{status.tool} {status.tool_version or ''}".strip()
    report.checks.append(f"bbolt consistency check passed ({status.command}: revision {status.revision}, "
                         f"{report.db_entries} database entries)")
    return status


def check_content(f: Fetched, status: SnapshotStatus, content: Content, report: Report, bumped: int = 0) -> None:
    expected_rev = (status.revision or 0) + bumped
    if content.total_keys == 0:
        # An empty etcd: `snapshot status` says revision 0 while the restored etcd starts at 1; the real news is
        # that there is nothing in it (hostile-inputs finding 15).
        raise VerifyMismatch(f"{f.origin} restores, but holds no keys at all: it is a snapshot of an empty etcd "
                             f"({status.command} revision {expected_rev}, restored at revision {content.revision})",
                             "it would bring back an empty cluster: use a snapshot of the Talos node's etcd")
    if content.revision != expected_rev:
        raise VerifyMismatch(f"{f.origin} restored at revision {content.revision}, but the file says {expected_rev}",
                             "use another snapshot and report this (etcd version mismatch?)")
    meta_rev = f.entry.revision if f.entry is not None and f.entry.verification is None else None
    if meta_rev is not None and meta_rev + bumped != content.revision:
        raise VerifyMismatch(f"{f.origin} holds revision {content.revision}, but the object's metadata says {meta_rev}",
                             "use another snapshot; this object is not the one that was uploaded")
    if content.registry_keys == 0:
        raise VerifyMismatch(f"{f.origin} restores, but holds no Kubernetes objects (no /registry/ keys; "
                             f"{content.total_keys} keys in all)",
                             "it would bring back an empty cluster: use a snapshot of the Talos node's etcd")
    report.revision = content.revision
    report.total_keys = content.total_keys
    report.registry_keys = content.registry_keys
    report.resources = content.sorted_resources()


def read_back(etcd: ThrowawayEtcd, content: Content) -> None:
    content.revision = etcd.revision
    for kv in etcd.iter_kvs(keys_only=True):
        content.add(kv.key)


def check_cluster(f: Fetched, cluster: str | None, report: Report) -> None:
    """A stored snapshot recorded (at upload, in its metadata) for another cluster than this stack's is refused: it
    would bring back someone else's cluster."""
    recorded = f.entry.cluster if f.entry is not None else None
    if not cluster or cluster == "unknown" or not recorded or recorded == "unknown":
        return
    if recorded != cluster:
        raise VerifyMismatch(f"{f.origin} was recorded for cluster {recorded}, not this stack's cluster {cluster}",
                             "use a snapshot of this cluster (`talos-dr list` shows them), or point --cluster / "
                             "--bucket at the stack it belongs to")
    report.checks.append(f"recorded for this cluster ({cluster})")


def check_bbolt_meta(f: Fetched, raw: bool = False) -> None:
    """Refuse a snapshot whose bbolt meta pages etcd could not open (dr.core.bbolt): the structure check that needs no
    etcd tool. ``raw``: a database file without the 32-byte trailer."""
    from dr.core import bbolt

    with open(f.path, "rb") as fh:
        head = fh.read(bbolt.HEAD_NEEDED)
    try:
        bbolt.check_meta(head, f.digest.size - (0 if raw else 32))
    except ValueError as exc:
        raise CorruptSnapshot(f"{f.origin} passes its SHA-256 trailer check but is not a database etcd can open: "
                              f"{exc}; nothing was changed", "use another snapshot (install etcdutl to see more with "
                              "`etcdutl snapshot status`)") from None


def check_bbolt_pages(f: Fetched, raw: bool = False) -> None:
    """Without etcd here: walk the page tree as bbolt reads it (dr.core.bbolt.walk_pages), so a snapshot with a
    damaged page is refused before a reset even then."""
    import mmap

    from dr.core import bbolt

    with open(f.path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        data = memoryview(mm)[: f.digest.size - (0 if raw else 32)]
        try:
            meta = bbolt.check_meta(bytes(data[: bbolt.HEAD_NEEDED]), len(data))
            bbolt.walk_pages(data, meta)
        except ValueError as exc:
            raise CorruptSnapshot(f"{f.origin} passes its SHA-256 trailer check but bbolt would refuse it: {exc}; "
                                  "nothing was changed", "use another snapshot") from None
        finally:
            data.release()


# What a restore may skip, by name, when this machine has no etcd to prove the snapshot in (the bbolt check still runs).
SKIP_ETCD_FLAG = "--skip-etcd-proof"
SKIPPED_WITHOUT_ETCD = ("the throwaway restore (etcd opening it, the key count, the Kubernetes content and the "
                        "revision): only the SHA-256 trailer and bbolt's pages (walked here) were checked, so a "
                        "snapshot etcd cannot serve for another reason is found by the node only AFTER its reset")


DATA_DIR_FLAG = "--from-data-dir-copy"
DATA_DIR_CONSEQUENCES = (
    "no SHA-256 trailer vouches for this file, so the node is told --recover-skip-hash-check: only etcd's bbolt check "
    "and this machine's throwaway restore (every key read back) proved it",
    "it holds what etcd had written to its database file when the copy was made: writes then only in etcd's WAL "
    "(the last seconds before the volume snapshot) are not in it",
    "a copy of a running member's disk is crash-consistent at best: take a real snapshot (`talos-dr backup`) as soon "
    "as the cluster runs again",
)


def fetch_data_dir_copy(spec: str) -> Fetched:
    """A raw ``member/snap/db`` (e.g. copied out of an EBS snapshot of the node's disk: the last copy when the bucket
    is gone) as a Fetched: a regular local file with bbolt's magic and no hash trailer. A file
    with a trailer is refused (etcd would strip and check it: restore it without the flag)."""
    from dr.core.errors import ConfigError, EmptySnapshot, NotASnapshot
    from dr.core.integrity import BOLT_MAGIC, BOLT_MAGIC_OFFSET, PAGE_ALIGN, TRAILER_SIZE, SnapshotDigest

    path = source.check_local_file(Path(spec))
    before = path.stat()
    if before.st_size == 0:
        raise EmptySnapshot(f"{path} is empty (0 bytes)", "copy member/snap/db again from the volume snapshot")
    if before.st_size % PAGE_ALIGN == TRAILER_SIZE:
        # etcdutl's hasChecksum (v3.6.12 etcdutl/snapshot/v3_snapshot.go): this size means "a hash is appended".
        raise ConfigError(f"{path} ends in a snapshot hash trailer (size % 512 == 32): it is a snapshot, not a "
                          "data-dir copy", f"restore it without {DATA_DIR_FLAG}")
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        head = fh.read(4096)
        h.update(head)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    if len(head) < BOLT_MAGIC_OFFSET + 4 or int.from_bytes(head[BOLT_MAGIC_OFFSET:BOLT_MAGIC_OFFSET + 4],
                                                             "little") != BOLT_MAGIC:
        raise NotASnapshot(f"{path} is not an etcd database (no bbolt header)",
                           "copy <etcd data dir>/member/snap/db itself (on Talos: /var/lib/etcd/member/snap/db)")
    digest = h.hexdigest()
    return Fetched(path, str(path), SnapshotDigest(before.st_size, digest, digest), stat_before=before)


# The revision bump a restore applies (etcd's disaster-recovery guide, v3.6 op-guide/recovery.md "Restoring with
# revision bump": 1'000'000'000 covers a week-old snapshot at under 1500 writes per second; a one-node Talos cluster
# writes far less). int64 revisions leave room for billions of such restores.
BUMP_REVISION = 1_000_000_000


@dataclass
class Proof:
    """What ``prove`` established. ``skipped`` names what was not proved (empty for a full proof). ``bumped``: the
    snapshot the throwaway etcd saved after ``--bump-revision bumped --mark-compacted`` (what a restore uploads)."""

    status: SnapshotStatus
    content: Content | None
    skipped: list[str] = field(default_factory=list)
    bumped: Path | None = None
    bump: int = 0
    not_bumped: str = ""  # why a requested bump was not made


def prove(f: Fetched, report: Report, *, base: Path, cluster: str | None, err: TextIO, prog: str = PROG,
          skip_etcd: bool = False, inside: Callable[[ThrowawayEtcd, Content], None] | None = None,
          raw: bool = False, bump_into: Path | None = None) -> Proof:
    """The one proof `talos-dr verify` and `talos-dr restore` (before anything on the node changes) run on a fetched
    snapshot, so what one refuses the other refuses: integrity (trailer, recorded SHA-256), the recorded cluster,
    structure (bbolt meta pages, then `snapshot status`), then a restore into a throwaway etcd under ``base`` whose
    content is read back (``inside``, default: count every key) and checked (``check_content``).

    Without etcd and a restore tool here the proof cannot be made: ``EtcdMissing`` naming how to install them, unless
    ``skip_etcd`` (restore's --skip-etcd-proof), which proves structure with what is here and says what was skipped.
    ``raw``: ``f`` is a data-dir copy (``fetch_data_dir_copy``); the throwaway restore skips the hash check it lacks.
    ``bump_into``: restore into the throwaway etcd with ``--bump-revision BUMP_REVISION --mark-compacted`` (when an
    etcdutl here has them) and save a fresh snapshot of it, with its SHA-256 trailer, at that path (restore's
    upload: the revision moves forward, see docs/adr or the module doc of dr.commands.restore.command)."""
    check_integrity(f, report, raw)
    check_cluster(f, cluster, report)
    check_bbolt_meta(f, raw)
    try:
        binaries()
    except EtcdMissing as exc:
        if not skip_etcd:
            raise EtcdMissing(f"{f.origin} cannot be proved on this machine: {exc.message}",
                              missing_hint() + f"; or, for a restore, pass {SKIP_ETCD_FLAG} to go on without "
                              "that proof") from None
        check_bbolt_pages(f, raw)
        report.checks.append("every bbolt page the buckets reach walked (flags, ids, bounds) without etcd")
        status = snapshot_status(f.path, optional=True)
        if status.tool:
            report.db_entries = status.total_keys or 0
            report.checks.append(f"bbolt consistency check passed ({status.command}: revision {status.revision})")
        else:
            report.checks.append("bbolt meta pages valid (no etcdutl/etcdctl here for the full check)")
        print(f"{prog}: warning: {SKIP_ETCD_FLAG}: not proved: {SKIPPED_WITHOUT_ETCD}", file=err)
        return Proof(status, None, [SKIPPED_WITHOUT_ETCD])
    status = check_database(f, report)
    bump, not_bumped = 0, ""
    if bump_into is not None:
        from dr.adapters.etcdlocal import bump_tool

        if bump_tool() is not None:
            bump = BUMP_REVISION
        else:
            not_bumped = ("no etcdutl with --bump-revision/--mark-compacted here (etcd 3.5.10 or later; `make etcd` "
                          "unpacks 3.5.16)")
    print(f"{prog}: restoring {f.origin} into a throwaway etcd under {base} to prove it"
          + (f" (revision bumped by {bump}, marked compacted)" if bump else "") + " ...", file=err, flush=True)
    t1 = time.monotonic()
    content = Content()
    saved: Path | None = None
    with ThrowawayEtcd(f.path, base_dir=base, label=f.origin, checked=None if raw else f.digest, raw=raw,
                       bump_revision=bump) as etcd:
        if etcd.tool is not None:
            report.tools["restore"] = etcd.tool.label
        (inside or read_back)(etcd, content)
        check_content(f, status, content, report, bumped=bump)
        if bump and bump_into is not None:
            etcd.save_snapshot(bump_into)
            saved = bump_into
    report.seconds["restore"] = round(time.monotonic() - t1, 3)
    return Proof(status, content, bumped=saved, bump=bump, not_bumped=not_bumped)


def record(f: Fetched, r: Resolver, report: Report, content: Content, err: TextIO) -> None:
    """Tags on the S3 object, or the catalog next to a local file. A failure to record is a warning: the
    snapshot did verify."""
    report.verified_at = _now_text()
    try:
        if f.entry is not None and f.store is not None and f.store.kind == "s3":
            f.store.record_verification(f.entry, Verification(report.verified_at, content.revision,
                                                              content.total_keys, f.digest.content_sha256))
            report.recorded = f"tags on {f.entry.location}"
        elif f.entry is None:
            # A plain local file verified in place: its folder's catalog, tied to the SHA-256 of its bytes.
            local = open_store(f.path.parent)
            entry = local.entry(f.path, naming.parse(f.path.name) or naming.SnapshotName(
                f.path.name, f.path.name, datetime.now(UTC), "unknown"))
            local.record_verification(entry, Verification(report.verified_at, content.revision, content.total_keys,
                                                          f.digest.file_sha256, content.sorted_resources()),
                                      stat_before=f.stat_before)
            report.recorded = str(f.path.parent / CATALOG_NAME)
        else:
            print(f"{PROG}: note: {f.origin} was decoded into a temporary copy; the pass is not recorded on the "
                  "encoded file", file=err)
    except (DRError, OSError) as exc:
        report.recorded = ""
        print(f"{PROG}: warning: the snapshot verified, but recording the result failed: {exc} "
              f"(`{spelling.command('list')}` will not show it as verified)", file=err)


def take_back(spec: str, f: Fetched | None, r: Resolver, err: TextIO) -> None:
    """A verification that failed clears what claimed the snapshot was good (a pass recorded for other
    bytes must not stand): the
    object's ``verified-*`` tags, or the local catalog's record, so `latest-verified` and `list` stop vouching for
    it. Best effort: the failure itself is what the command reports."""
    from dr.commands.source import resolve

    try:
        if f is not None and f.entry is not None and f.store is not None:
            store, entry = f.store, f.entry
        elif f is not None:
            store = open_store(f.path.parent)
            entry = store.entry(f.path, naming.parse(f.path.name) or naming.SnapshotName(
                f.path.name, f.path.name, datetime.now(UTC), "unknown"))
        elif Path(spec).is_file():
            path = Path(spec)
            store = open_store(path.parent)
            entry = store.entry(path, naming.parse(path.name) or naming.SnapshotName(
                path.name, path.name, datetime.now(UTC), "unknown"))
        else:
            store, entry = resolve(spec, r, None)
        cleared = store.clear_verification(entry)  # type: ignore[attr-defined]
    except (DRError, OSError, AttributeError):
        return
    if cleared:
        print(f"{PROG}: the earlier pass recorded for {entry.location} was cleared ({', '.join(cleared)})", file=err)


def _print_text(report: Report, out: TextIO) -> None:
    print(f"verifying {cli.printable(report.source)}", file=out)
    for c in report.checks:
        print(f"  ok  {c}", file=out)
    t = report.seconds
    how = f" with {report.tools['restore'].split()[0]} snapshot restore" if report.tools.get("restore") else ""
    print(f"  ok  restored into a throwaway etcd{how} and read back in {t.get('restore', 0):.1f}s: revision "
          f"{report.revision}, {report.total_keys} keys", file=out)
    print("\n  resource type                                 keys", file=out)
    for name, n in report.resources.items():
        print(f"  {name:<42} {n:>7}", file=out)
    print(f"  {'total':<42} {report.total_keys:>7}", file=out)
    if report.against is not None:
        a = report.against
        print(f"\nchanges from {a['source']} (revision {a['revision']}, {a['total_keys']} keys)\n"
              f"          to {report.source} (revision {report.revision}, {report.total_keys} keys):", file=out)
        changed = {k: v for k, v in a["resources"].items() if v["added"] or v["removed"] or v["changed"]}
        if not changed:
            print("  no differences: the same keys with the same values", file=out)
        else:
            print(f"  {'resource type':<34} {'added':>7} {'removed':>8} {'changed':>8} {'same':>7}", file=out)
            for name, d in changed.items():
                print(f"  {name:<34} {d['added']:>7} {d['removed']:>8} {d['changed']:>8} {d['unchanged']:>7}",
                      file=out)
            for name, d in changed.items():
                for kind, sign in (("added", "+"), ("removed", "-"), ("changed", "~")):
                    keys = d["examples"][kind]
                    for k in keys[:EXAMPLES]:
                        print(f"    {sign} {k}", file=out)
                    if d[kind] > EXAMPLES:
                        print(f"    {sign} ... and {d[kind] - EXAMPLES} more {kind} {name}", file=out)
    where = f"; recorded as {report.recorded}" if report.recorded else ""
    print(f"\nverified: {cli.printable(report.source)} restores (revision {report.revision}, {report.total_keys} keys, "
          f"{len([r for r in report.resources if r != OUTSIDE])} resource types){where}", file=out)


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(PROG, "Prove a snapshot restores: check its hash, restore it into a throwaway etcd, count what "
                         "it holds per Kubernetes resource type, and record the result.", examples=(
                             f"{PROG} latest                      # the newest snapshot in the bucket",
                             f"{PROG} latest~1 --against latest   # what changed in the newest one",
                             f"{PROG} etcd-snapshot-20260101T000000Z.db --identity ~/talos-dr-age.key",
                         ))
    p.add_argument("snapshot", help="a name `list` prints, a local file, s3://bucket/key, `latest`, `latest~N` or "
                                    "`latest-verified`")
    p.add_argument("--against", metavar="SNAPSHOT",
                   help="another snapshot (same forms) to compare with: keys added/removed/changed per type since it")
    p.add_argument(DATA_DIR_FLAG, dest="from_data_dir_copy", action="store_true",
                   help="SNAPSHOT is a raw member/snap/db copied from etcd's data directory (no hash trailer): "
                        "prove it as `talos-dr restore --from-data-dir-copy` would")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout (also on failure)")
    p.add_argument("--tmp-dir", help="where the throwaway etcd and downloads go (default: $TMPDIR or /tmp); "
                                     "needs the snapshot's size plus 80 MiB free")
    add_common_flags(p)
    return p


def run(args: argparse.Namespace, out: TextIO, err: TextIO, report: Report) -> int:
    """Prove ``args.snapshot`` restores, filling ``report`` as it goes (``--json`` prints it, also on failure)."""
    r = Resolver(args)
    binaries()  # a missing etcd is a clear error before any download, never a pass (prove() checks it again)
    base = Path(args.tmp_dir) if args.tmp_dir else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    downloads = Path(tempfile.mkdtemp(prefix="dr-verify-download-", dir=base))
    f: Fetched | None = None
    reading_against = [False]  # True while the --against snapshot is being read: its failure takes nothing back
    try:
        t0 = time.monotonic()
        f = (fetch_data_dir_copy(args.snapshot) if args.from_data_dir_copy
             else fetch(args.snapshot, r, downloads, err))
        report.source = f.origin
        # Its own folder: two objects with the same name in different buckets or prefixes must not collide.
        reading_against[0] = True
        g = fetch(args.against, r, downloads / "against", err) if args.against else None
        if g is not None:
            check_integrity(g, Report(source=g.origin))
            check_database(g, Report(source=g.origin))
        reading_against[0] = False
        report.seconds["integrity"] = round(time.monotonic() - t0, 3)

        def compare(etcd: ThrowawayEtcd, content: Content) -> None:
            assert g is not None
            base_content = Content()
            with ThrowawayEtcd(g.path, base_dir=base, label=g.origin, checked=g.digest) as other:
                content.revision, base_content.revision = etcd.revision, other.revision
                diffs = diff_streams(etcd.iter_kvs(keys_only=False), other.iter_kvs(keys_only=False),
                                     content, base_content)
            report.against = {
                "source": g.origin, "revision": base_content.revision, "total_keys": base_content.total_keys,
                "resources_count": base_content.sorted_resources(),
                "resources": {k: {**asdict(v)} for k, v in diffs.items()},
            }

        proof = prove(f, report, base=base, cluster=source.known_cluster(r), err=err,
                      inside=compare if g is not None else None, raw=args.from_data_dir_copy)
        content = proof.content
        assert content is not None  # verify never skips the etcd proof
        record(f, r, report, content, err)
        report.ok = True
    except (IntegrityError, VerifyMismatch):
        if not reading_against[0]:
            take_back(args.snapshot, f, r, err)
        raise
    finally:
        shutil.rmtree(downloads, ignore_errors=True)
    if args.json:
        print(json.dumps(asdict(report), indent=2), file=out)
    else:
        _print_text(report, out)
    return 0


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = Report(source=args.snapshot)
    # With --json a failure still prints one document: the report as far as it got.
    return cli.execute(PROG, args, lambda o, e: run(args, o, e, report), out=out, err=err, extra=lambda: asdict(report))


sigterm_as_interrupt = cli.sigterm_as_interrupt  # kept importable here (dr/verify.py)
