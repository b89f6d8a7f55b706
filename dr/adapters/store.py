"""Snapshot stores: one protocol, a local folder and an S3 prefix behind it (restic's backend interface and gardener's
snapstore are the models). Commands list, stat, fetch, put and record verifications through it and never branch on
where a snapshot lives; tests/adapters/test_store_contract.py runs one contract suite against both.

Formats are the store's business: ``put`` takes plaintext chunks and stores them plain, zstd-compressed and/or
age-encrypted (``dr.adapters.codec``), checking the etcd hash trailer on the plaintext as it streams, and nothing
becomes visible unless the trailer matches (a ``.part`` renamed, or a multipart upload completed). ``fetch`` undoes
the layers the content carries and checks the trailer again, into a local ``.part`` renamed at the end.

Names: every entry is listed under its stored name (``etcd-snapshot-<ts>.db.zst.age``,
``<cluster>-<RFC3339>.snap``...); ``stat`` and ``find`` accept the stored name or the plain name it decodes to.
"""

from __future__ import annotations

import difflib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TextIO

from botocore.exceptions import BotoCoreError, ClientError

from dr.adapters import codec, s3
from dr.adapters.fsutil import atomic_write, atomic_writer, read_state_file
from dr.adapters.talosapi.h2stream import printable
from dr.core import naming, spelling, tiers
from dr.core.errors import (
    AccessDenied,
    ConfigError,
    DiskFull,
    DRError,
    IntegrityError,
    S3Error,
    SnapshotNotFound,
    UntrustedSnapshot,
)
from dr.core.integrity import CHUNK, SnapshotDigest, TrailerHasher, iter_file
from dr.core.timefmt import iso_utc

CATALOG_NAME = ".verified.json"
LOCAL = "local"
S3 = "s3"


@dataclass(frozen=True)
class Verification:
    """A recorded pass of dr.verify. ``sha256`` is the SHA-256 of the bytes that passed (the whole local file, or
    the plaintext's content SHA-256 for an S3 object, whose bytes S3 versions itself)."""

    verified_at: str
    revision: int | None = None
    keys: int | None = None
    sha256: str | None = None
    resources: dict[str, int] | None = None  # per resource type (kept locally; S3 tags have no room for it)


@dataclass(frozen=True)
class Entry:
    store: str  # LOCAL or S3
    name: naming.SnapshotName
    location: str  # a path, or s3://bucket/key
    size: int  # stored bytes
    modified: datetime  # mtime, or S3's LastModified
    sha256: str | None = None  # the plaintext's content SHA-256 (its trailer), when recorded
    plain_size: int | None = None
    revision: int | None = None
    cluster: str | None = None
    recorded_taken_at: str | None = None  # metadata taken-at, when recorded
    source: str | None = None  # dr.backup | schedule, when recorded
    verification: Verification | None = None
    key: str | None = None  # S3 key
    path: Path | None = None  # local path
    tier: str | None = None  # S3: the retention tag (dr.core.tiers)
    warning: str | None = None  # from put: what did not happen beside the store (the `latest` copy), for the caller
    described: bool = False  # metadata and tags read (S3), or catalog consulted (local)
    # S3: the SHA-256 S3 recorded for the stored bytes at upload (base64, "-N" for a multipart's composite), which
    # nobody can change afterwards; and whether ``sha256``/``plain_size`` came from tags (changeable after upload by
    # a principal allowed to tag) rather than metadata (fixed at upload).
    s3_checksum: str | None = None
    facts_from_tags: bool = False
    # S3: what was listed or described, so the download reads that and nothing put there since (hostile-inputs 61).
    etag: str | None = None
    version_id: str | None = None

    @property
    def format(self) -> str:
        return self.name.format


class SnapshotStore(Protocol):
    kind: str

    @property
    def where(self) -> str: ...

    def list(self) -> list[Entry]: ...
    def stat(self, name: str) -> Entry: ...
    def describe(self, entry: Entry) -> Entry: ...
    def open(self, entry: Entry) -> Iterator[bytes]: ...
    def put(self, chunks: Iterable[bytes], plain: str, *, compress: bool = False, recipients: Sequence[Any] = (),
            metadata: dict[str, str] | None = None, expected_sha256: str | None = None,
            progress: s3.ProgressFn | None = None, label: str | None = None) -> Entry: ...
    def record_verification(self, entry: Entry, v: Verification) -> None: ...


def newest_first(entries: Iterable[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (e.name.taken_at, e.modified, e.name.name), reverse=True)


def find(entries: Iterable[Entry], name: str) -> Entry | None:
    """The entry whose stored or plain name is ``name`` (the stored name wins; among plain-name matches the newest)."""
    base = name.rsplit("/", 1)[-1]
    candidates = list(entries)
    plain = [e for e in candidates if e.name.plain == base]
    exact = [e for e in candidates if e.name.name == base]
    if exact and any(e.name.name != base for e in plain):
        # `X.db` stored as it is and `X.db.zst` beside it: `list` shows one row for the name, and which object the
        # name meant was a guess (hostile-inputs 22). Refused: the caller names one by its stored name or URI.
        others = ", ".join(printable(e.location) for e in [*exact, *plain] if e.name.name != base or e is exact[0])
        raise ConfigError(f"{printable(base)} names more than one stored snapshot ({others})",
                          "name the one you mean by its full stored name or s3:// URI (`talos-dr list --json` "
                          "shows both)")
    if exact:
        return exact[0]
    return newest_first(plain)[0] if plain else None


def not_found(name: str, where: str, entries: Iterable[Entry]) -> SnapshotNotFound:
    """"No snapshot named X", with the closest names there (a digit wrong in a 33-character name at 3 a.m.)."""
    base = name.rsplit("/", 1)[-1]  # `where` already ends with the prefix: say it once
    close = difflib.get_close_matches(base, sorted({e.name.name for e in entries}), n=3, cutoff=0.8)
    maybe = f"did you mean {' or '.join(close)}? " if close else ""
    return SnapshotNotFound(f"no snapshot named {base} in {where}",
                            f"{maybe}list snapshots with `{spelling.command('list')}`")


def _verified_chunks(chunks: Iterable[bytes], hasher: TrailerHasher, expected: str | None,
                     out: list[SnapshotDigest]) -> Iterator[bytes]:
    for c in chunks:
        if c:
            hasher.update(c)
            yield c
    digest = hasher.finish()  # raises the integrity error at the end of the stream, before anything is committed
    if expected and digest.content_sha256 != expected:
        from dr.core.errors import IntegrityError

        raise IntegrityError(f"{hasher.label} changed while it was stored (SHA-256 {digest.content_sha256[:16]}… "
                             f"instead of {expected[:16]}…)", "take the snapshot again; do not modify snapshot files "
                             "while they are copied")
    out.append(digest)


FUTURE_SLACK = timedelta(minutes=5)  # clock skew allowed between a name's time, S3's clock and ours


def _effective_time(e: Entry) -> datetime:
    """When a snapshot can have been taken at the latest: its name's time, but never after S3 stored it (S3's clock,
    LastModified, bounds what a wrong clock wrote into the name: hostile-inputs 39-40)."""
    return min(e.name.taken_at, e.modified) if e.store == "s3" else e.name.taken_at


def named_after_upload(e: Entry) -> bool:
    """The name's time is after S3 stored the object: the clock that named it was ahead."""
    return e.store == "s3" and e.name.taken_at > e.modified + FUTURE_SLACK


def suspicious(e: Entry, now: datetime) -> str | None:
    """Why ``e``'s name cannot be trusted for "newest", or None: a time in the future, or after S3 stored it."""
    if e.name.taken_at > now + FUTURE_SLACK:
        return f"its name says {iso_utc(e.name.taken_at)}, in the future"
    if e.store == "s3" and e.name.taken_at > e.modified + FUTURE_SLACK:
        return f"its name says {iso_utc(e.name.taken_at)}, after S3 stored it ({iso_utc(e.modified)})"
    return None


def candidates(entries: Iterable[Entry]) -> list[Entry]:
    """What ``latest~N`` counts, newest first by evidence: every snapshot but the safety ones."""
    return sorted((e for e in entries if not e.name.safety), key=lambda e: (_effective_time(e), e.name.name),
                  reverse=True)


def latest_steps(entries: Iterable[Entry], now: datetime, n: int = 3) -> dict[str, str]:
    """Which names ``latest``, ``latest~1``, ... pick (the first ``n``), for `list` to mark: the order ``newest``
    uses, names it refuses skipped (a cluster recorded in an object's metadata is checked only by ``newest``)."""
    fine = [e for e in candidates(entries) if suspicious(e, now) is None and e.size != 0]
    return {e.name.name: "latest" + (f"~{i}" if i else "") for i, e in enumerate(fine[:n])}


def newest(store: SnapshotStore, *, now: datetime | None = None, cluster: str | None = None,
           err: TextIO | None = None, skip: int = 0, verified_only: bool = False) -> Entry:
    """The newest snapshot by evidence, not by name alone (security M1, hostile-inputs 4): ordered by the earlier of
    its name's time and S3's LastModified, names in the future or after their upload refused, and (when ``cluster``
    is known) objects recorded for another cluster skipped. ``skip`` steps back that many (``latest~N``);
    ``verified_only`` keeps only snapshots with a standing verification (``latest-verified``)."""
    now = now or datetime.now(UTC)
    ordered = candidates(store.list())
    if not ordered:
        raise SnapshotNotFound(f"there are no snapshots in {store.where}",
                               f"take one with `{spelling.command('backup', '--save-to-s3')}`, name a local file, or "
                               "pass --prefix where they are")
    passed = 0
    refused: list[str] = []
    for e in ordered:
        why = suspicious(e, now) or ("it is empty (0 bytes)" if e.size == 0 else None)  # hostile-inputs 16
        if why is None:
            e = store.describe(e)
            if cluster and e.cluster and e.cluster not in (cluster, "unknown"):
                why = f"it was recorded for cluster {e.cluster}, not {cluster}"
            elif verified_only and e.verification is None:
                continue
        if why is not None:
            refused.append(f"{e.location}: {why}")
            continue
        if passed == skip:
            for line in refused:
                if err is not None:
                    print(f"note: not a candidate for latest: {printable(line)}", file=err)
            uploaded_later = [o for o in ordered if o.modified > e.modified and not o.name.safety
                              and o.name.taken_at < e.name.taken_at - FUTURE_SLACK and suspicious(o, now) is None]
            if uploaded_later and err is not None and e.store == "s3" and skip == 0:
                o = max(uploaded_later, key=lambda x: x.modified)
                print(f"note: {o.location} was uploaded after it (S3 stored it at {iso_utc(o.modified)}) but its name "
                      f"says an earlier time ({iso_utc(o.name.taken_at)}): an older snapshot uploaded late, or a clock "
                      "that was behind; name it if that is the one you mean", file=err)
            return e
        passed += 1
    what = "verified snapshot" if verified_only else "snapshot"
    detail = f"; refused: {'; '.join(refused)}" if refused else ""
    raise SnapshotNotFound(f"there is no {'' if not skip else f'{skip + 1}th newest '}{what} in {store.where} "
                           f"({len(ordered)} listed{detail})",
                           f"verify one with `{spelling.command('verify')}`" if verified_only else
                           f"list them with `{spelling.command('list')}`")


def _stored(plain: str, compress: bool, recipients: Sequence[Any]) -> tuple[str, naming.SnapshotName]:
    """The stored name of ``plain`` with these layers, parsed; a plain name that is no snapshot name is refused."""
    name = naming.stored_name(plain, compressed=compress, encrypted=bool(recipients))
    parsed = naming.parse(name)
    if parsed is None:
        raise ConfigError(f"{name} is not a snapshot name", "name snapshots etcd-snapshot-<UTC>.db")
    return name, parsed


def decode_to(chunks: Iterable[bytes], dest: Path, *, identities: Sequence[Any], label: str,
              stored_hash: Any = None, overwrite: bool = False,
              before_commit: Callable[[SnapshotDigest, codec.Layers], None] | None = None,
              max_plain: int | None = None, recorded_plain: int | None = None,
              ) -> tuple[SnapshotDigest, codec.Layers]:
    """Decode ``chunks`` (any layers) into ``dest`` through a 0600 ``.part``, checking the plaintext's trailer; the
    ``.part`` is renamed only when it and ``before_commit`` pass. ``stored_hash`` (a hashlib object) sees the stored
    bytes. Decoding stops the moment the plaintext passes ``recorded_plain`` (the size recorded at upload) or
    ``max_plain`` (the cap on any snapshot), so a small compressed bomb never fills a disk (hostile-inputs 15-16)."""
    hasher = TrailerHasher(label)

    def counted(it: Iterable[bytes]) -> Iterator[bytes]:
        for c in it:
            if stored_hash is not None:
                stored_hash.update(c)
            yield c

    try:
        with atomic_writer(dest, mode=0o600, overwrite=overwrite) as f:
            def sink(data: bytes) -> None:
                if recorded_plain is not None and hasher.size + len(data) > recorded_plain:
                    from dr.core.errors import CorruptSnapshot

                    raise CorruptSnapshot(f"{label} decodes to more than the {recorded_plain} bytes recorded at "
                                          "upload; decoding was stopped there and nothing was kept",
                                          "use another snapshot; this object was replaced or damaged")
                if max_plain is not None and hasher.size + len(data) > max_plain:
                    from dr.core.errors import SnapshotTooBig

                    raise SnapshotTooBig(f"{label} decodes to more than {max_plain} bytes, more than any etcd "
                                         "snapshot: a decompression bomb or not a snapshot; decoding was stopped "
                                         "there and nothing was kept",
                                         "use another snapshot; raise DR_MAX_SNAPSHOT_BYTES only if a real etcd "
                                         "database is that big")
                hasher.update(data)
                f.write(data)

            layers = codec.decode(counted(chunks), sink, identities=identities, label=label)
            try:
                digest = hasher.finish()
            except IntegrityError as exc:
                if not (layers.compressed or layers.encrypted):
                    raise
                # The message says which stored layers the damaged plaintext was read through.
                raise type(exc)(f"{exc.message} (read from a {layers.format} copy: the stored copy is damaged or "
                                "was cut short)", exc.hint) from None
            if before_commit is not None:
                before_commit(digest, layers)
    except OSError as exc:
        if exc.errno == 28:
            raise DiskFull(f"writing {dest} failed: no space left on device after {hasher.size} decoded bytes",
                           f"free space under {dest.parent} and retry; if that is far more than your cluster's etcd "
                           "holds, it is not a snapshot (a decompression bomb): use another one") from exc
        raise
    return digest, layers


def provenance_warnings(entry: Entry) -> list[str]:
    """What about an S3 object says talos-dr's writers did not write it (they always ask S3 for a SHA-256 and record
    their ``source``): one line each, for the operator to weigh before a restore. Pure."""
    if entry.store != S3:
        return []
    out = []
    if not entry.s3_checksum:
        out.append(f"S3 recorded no checksum for {entry.location}: talos-dr's writers always ask for one, so something "
                   "else wrote it; make sure you know what (the bucket policy names who may write there)")
    if entry.described and entry.source is None and naming.parse(entry.location.rsplit("/", 1)[-1]) is not None \
            and entry.name.name.startswith(naming.PREFIX):
        out.append(f"{entry.location} does not say which talos-dr writer made it (no source metadata)")
    return out


def _vouched_by_s3(entry: Entry, stored: s3.StoredChecksum | None, warn: Callable[[str], None] | None) -> bool:
    """True when the bytes read are the ones S3 recorded a SHA-256 of at upload; ``UntrustedSnapshot`` when they are
    not; False when there is no checksum to compare, or it cannot be told (a composite of other part sizes)."""
    if stored is None or not entry.s3_checksum:
        return False
    same = stored.check(entry.s3_checksum)
    if same is False:
        raise UntrustedSnapshot(f"{entry.location} is not what was uploaded: its bytes do not match the SHA-256 S3 "
                                f"recorded at upload ({entry.s3_checksum})",
                                "use another snapshot, and find out what replaced this one")
    if same is None and warn is not None:
        warn(f"{entry.location} was uploaded in parts of another size than talos-dr's; its bytes could not be checked "
             f"against the composite SHA-256 S3 recorded ({entry.s3_checksum})")
    return same is True


def fetch(store: SnapshotStore, entry: Entry, dest: Path, *, identities: Sequence[Any] = (),
          progress: s3.ProgressFn | None = None, overwrite: bool = False,
          warn: Callable[[str], None] | None = None, max_plain: int | None = None,
          ) -> tuple[SnapshotDigest, codec.Layers]:
    """``entry``'s plaintext, decoded and verified, at ``dest`` (nothing there, and no ``.part``, on failure).

    Beyond the trailer: every stored byte must arrive (a short read is an S3 error to retry, not damage), the stored
    bytes must be the ones S3 recorded a SHA-256 of at upload (``UntrustedSnapshot`` otherwise), and the SHA-256 and
    size recorded at upload must be the plaintext's. Facts that came from tags (which a tagger can change after
    upload) are believed only against those bytes: when the S3 checksum vouches for the bytes and the trailer passes,
    a tag that disagrees was rewritten, and ``warn`` is told instead of the snapshot being refused."""
    seen = [0]
    stored = s3.StoredChecksum() if entry.s3_checksum else None
    for line in provenance_warnings(entry):
        if warn is not None:
            warn(line)

    def counted(it: Iterable[bytes]) -> Iterator[bytes]:
        for c in it:
            seen[0] += len(c)
            if stored is not None:
                stored.update(c)
            if progress:
                progress(len(c))
            yield c

    def check(digest: SnapshotDigest, layers: codec.Layers) -> None:
        from dr.core.errors import CorruptSnapshot

        if seen[0] != entry.size:
            raise S3Error(f"reading {entry.location} ended after {seen[0]} of {entry.size} bytes", "retry the download")
        vouched = _vouched_by_s3(entry, stored, warn)
        tag_only = entry.facts_from_tags and vouched
        if entry.sha256 and entry.sha256 != digest.content_sha256 and tag_only:
            if warn is not None:
                warn(f"the snapshot-sha256 tag of {entry.location} was changed after upload ({entry.sha256[:16]}…); "
                     "its bytes are the ones S3 recorded at upload and its trailer checks, so the tag is ignored")
        elif entry.sha256 and entry.sha256 != digest.content_sha256:
            raise CorruptSnapshot(f"{entry.location} is not the snapshot that was stored: its SHA-256 "
                                  f"{digest.content_sha256[:16]}… differs from the {entry.sha256[:16]}… recorded at "
                                  "upload", "use another snapshot; this object was replaced or damaged")
        if entry.plain_size is not None and entry.plain_size != digest.size and not tag_only:
            raise CorruptSnapshot(f"{entry.location} decodes to {digest.size} bytes, not the {entry.plain_size} "
                                  "recorded at upload", "use another snapshot; this object was replaced or damaged")

    return decode_to(counted(store.open(entry)), dest, identities=identities, label=entry.location,
                     overwrite=overwrite, before_commit=check, max_plain=max_plain, recorded_plain=entry.plain_size)


def _verification(rec: dict[str, Any]) -> Verification:
    return Verification(rec.get("verified_at", ""), rec.get("revision"), rec.get("keys"), rec.get("sha256"))


# --- the local folder ------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter_file(f):
            h.update(block)
    return h.hexdigest()


@dataclass
class LocalStore:
    """A folder of snapshot files (``.talos/snapshots`` and its ``downloads``). Verifications live in
    ``.verified.json`` in the folder, each tied to the SHA-256 of the file's bytes: an entry whose file has changed
    (other bytes, whatever its size and mtime) no longer counts. Re-hashing is skipped only while the file's inode
    and ctime are those recorded: no write, truncate, rename-over or ``touch`` leaves ctime alone."""

    root: Path
    kind: str = LOCAL

    @property
    def where(self) -> str:
        return str(self.root)

    def entry(self, p: Path, parsed: naming.SnapshotName) -> Entry:
        st = p.stat()
        return Entry(LOCAL, parsed, str(p), st.st_size, datetime.fromtimestamp(st.st_mtime, UTC), path=p)

    def list(self) -> list[Entry]:
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            parsed = naming.parse(p.name)
            if parsed is not None and not p.is_symlink() and p.is_file():
                out.append(self.entry(p, parsed))
        return newest_first(out)

    def stat(self, name: str) -> Entry:
        listing = self.list()
        e = find(listing, name)
        if e is None:
            raise not_found(name, str(self.root), listing)
        return self.describe(e)

    def verification_of(self, path: Path, file_sha256: str) -> Verification | None:
        """The recorded verification of ``path`` when its bytes are known to hash to ``file_sha256`` (a caller that has
        just read them all, as a restore's trailer check has): no stat shortcut, no second read."""
        rec = self._catalog().get(path.name)
        return _verification(rec) if rec and rec.get("sha256") == file_sha256 else None

    def describe(self, entry: Entry) -> Entry:
        assert entry.path is not None
        rec = self._catalog().get(entry.path.name)
        v = _verification(rec) if rec and self._still_same(entry.path, rec) else None
        return replace(entry, verification=v, revision=v.revision if v else None, described=True)

    def open(self, entry: Entry) -> Iterator[bytes]:
        assert entry.path is not None
        try:
            f = open(entry.path, "rb")
        except FileNotFoundError:
            raise SnapshotNotFound(f"{entry.path} no longer exists",
                                   f"list snapshots with `{spelling.command('list')}`") from None
        with f:
            yield from iter_file(f)

    def put(self, chunks: Iterable[bytes], plain: str, *, compress: bool = False, recipients: Sequence[Any] = (),
            metadata: dict[str, str] | None = None, expected_sha256: str | None = None,
            progress: s3.ProgressFn | None = None, label: str | None = None) -> Entry:
        name, parsed = _stored(plain, compress, recipients)
        dest = self.root / name
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        hasher = TrailerHasher(label or f"snapshot for {dest}")
        digests: list[SnapshotDigest] = []
        try:
            with atomic_writer(dest, mode=0o600, overwrite=False) as f:
                def write(data: bytes) -> None:
                    f.write(data)
                    if progress:
                        progress(len(data))

                codec.encode(_verified_chunks(chunks, hasher, expected_sha256, digests), write, compress=compress,
                             recipients=recipients)
        except OSError as exc:
            if exc.errno == 28:
                raise DiskFull(f"writing {dest} failed: no space left on device", "free disk space and retry") from exc
            raise
        d = digests[0]
        return replace(self.entry(dest, parsed), sha256=d.content_sha256, plain_size=d.size, described=True)

    def record_verification(self, entry: Entry, v: Verification, *, stat_before: os.stat_result | None = None) -> None:
        """Record a pass in ``.verified.json`` (``fsutil.atomic_write``: 0600, never through a symlink), under a lock
        on the folder so two verifications at once keep each other's entry. ``v.sha256`` must be the SHA-256 of the
        whole file as it was verified; it is recorded with the inode and ctime that let ``describe`` skip re-hashing.
        ``stat_before`` is the file's stat taken before those bytes were read: a file changed since then has a newer
        ctime, so the shortcut never vouches for bytes that were not hashed. Without it no shortcut is recorded."""
        assert entry.path is not None
        fd = os.open(self.root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            snaps = self._catalog()
            # Without the stat from before the hashing, no shortcut is recorded: describe then always re-hashes.
            st = stat_before or entry.path.stat()
            quick = {"ino": st.st_ino, "ctime_ns": st.st_ctime_ns} if stat_before is not None else {}
            snaps[entry.path.name] = {
                "sha256": v.sha256, "size": st.st_size, **quick,
                "verified_at": v.verified_at, "revision": v.revision, "keys": v.keys,
                **({"resources": v.resources} if v.resources is not None else {}),
            }
            snaps = {k: val for k, val in snaps.items() if (self.root / k).is_file()}  # forget files that are gone
            atomic_write(self.root / CATALOG_NAME,
                         json.dumps({"version": 2, "snapshots": dict(sorted(snaps.items()))}, indent=2) + "\n")
        finally:
            os.close(fd)

    def clear_verification(self, entry: Entry) -> Sequence[str]:
        """Forget ``entry``'s recorded pass (``.verified.json``, under the folder's lock): a verification that failed
        takes it back. Returns the names forgotten."""
        assert entry.path is not None
        fd = os.open(self.root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            snaps = self._catalog()
            if entry.path.name not in snaps:
                return []
            del snaps[entry.path.name]
            atomic_write(self.root / CATALOG_NAME,
                         json.dumps({"version": 2, "snapshots": dict(sorted(snaps.items()))}, indent=2) + "\n")
            return [entry.path.name]
        finally:
            os.close(fd)

    def record_details(self, name: str) -> dict[str, Any]:
        """The raw catalog entry (per-type counts and all), for callers that show more than ``Verification``."""
        return dict(self._catalog().get(name) or {})

    def _catalog(self) -> dict[str, dict[str, Any]]:
        try:
            # Never blocks on a FIFO planted there (hostile-inputs 33): a regular file or nothing.
            text = read_state_file(self.root / CATALOG_NAME, "the verification catalog")
            if text is None:
                return {}
            data = json.loads(text)
            snaps = data.get("snapshots", {})
            return snaps if isinstance(snaps, dict) and data.get("version") == 2 else {}
        except (OSError, ValueError, AttributeError):
            return {}

    @staticmethod
    def _still_same(path: Path, rec: dict[str, Any]) -> bool:
        try:
            st = path.stat()
        except OSError:
            return False
        if not rec.get("sha256") or rec.get("size") != st.st_size:
            return False
        if rec.get("ino") == st.st_ino and rec.get("ctime_ns") == st.st_ctime_ns:
            return True
        try:
            return file_sha256(path) == rec["sha256"]
        except OSError:
            return False


# --- an S3 prefix ----------------------------------------------------------------------------------------------


@dataclass
class S3Store:
    """Snapshot objects under ``prefix`` in ``bucket``. Metadata (set at upload) and tags (set after a streamed
    upload, or by a verification) carry the facts; tags belong to the object version, so an overwrite (which the
    writers' ``If-None-Match: *`` refuses anyway) would not inherit a verification."""

    client: Any
    bucket: str
    prefix: str
    kind: str = S3
    _listing: list[Entry] | None = field(default=None, repr=False)

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def list(self) -> list[Entry]:
        out: list[Entry] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    parsed = naming.parse(key)
                    if parsed is None or key.endswith("/"):
                        continue
                    out.append(Entry(S3, parsed, f"s3://{self.bucket}/{key}", obj["Size"], obj["LastModified"],
                                     key=key, etag=obj.get("ETag")))
        except (ClientError, BotoCoreError) as exc:
            raise s3.translate(exc, "listing", self.bucket, self.prefix) from exc
        self._listing = newest_first(out)
        return self._listing

    def server_time(self) -> datetime | None:
        """S3's own clock: the ``Date`` header of a one-key listing (RFC 9110 §6.6.1: the origin server's time when
        it made the response). None when it cannot be read. What a wrong local clock is measured against."""
        from email.utils import parsedate_to_datetime

        try:
            res = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
            date = res.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
            return parsedate_to_datetime(date).astimezone(UTC) if date else None
        except (ClientError, BotoCoreError, TypeError, ValueError):
            return None

    def _key(self, name: str) -> str:
        return name if name.startswith(self.prefix) and "/" in name else self.prefix + name

    def head(self, name: str, parsed: naming.SnapshotName | None = None) -> Entry:
        """The object stored under exactly ``name`` (no search by plain name, no listing), described; raises
        ``SnapshotNotFound``. ``parsed`` names an object whose key is no snapshot name (read as it is)."""
        key = self._key(name)
        parsed = parsed or naming.parse(key)
        if parsed is None:
            raise SnapshotNotFound(f"{key} is not a snapshot name", f"list snapshots with `{spelling.command('list')}`")
        return self._from_info(s3.head_snapshot(self.client, self.bucket, key), parsed)

    def stat(self, name: str) -> Entry:
        if naming.parse(self._key(name)) is not None:
            try:
                return self.head(name)
            except SnapshotNotFound:
                pass
        e = find(self._listing, name) if self._listing is not None else None
        if e is None:  # the cached listing may predate the object (a put since): list again before "not found"
            listing = self.list()
            e = find(listing, name)
            if e is None:
                raise not_found(name, self.where, listing)
        return self.describe(e)

    def describe(self, entry: Entry) -> Entry:
        assert entry.key is not None
        return self._from_info(s3.head_snapshot(self.client, self.bucket, entry.key), entry.name)

    def _from_info(self, info: s3.ObjectInfo, parsed: naming.SnapshotName) -> Entry:
        merged = {**info.tags, **info.metadata}
        facts = s3.object_facts(info)
        v = None
        if s3.TAG_VERIFIED_AT in info.tags:
            keys = info.tags.get(s3.TAG_VERIFIED_KEYS)
            rev = info.tags.get(s3.TAG_VERIFIED_REVISION)
            v = Verification(info.tags[s3.TAG_VERIFIED_AT], int(rev) if rev and rev.isdigit() else None,
                             int(keys) if keys and keys.isdigit() else None, info.tags.get(TAG_VERIFIED_SHA256))
            recorded = merged.get(s3.META_SHA256)
            if v.sha256 and recorded and v.sha256 != recorded:
                v = None  # a verification of other bytes than the object holds does not count
            # ... nor one of other stored bytes than S3 recorded at upload (the checksum nobody can change)
            checked = info.tags.get(s3.TAG_VERIFIED_CHECKSUM)
            if checked and checked != info.checksum_sha256:
                v = None
        size = merged.get(s3.META_SIZE)
        return Entry(S3, parsed, f"s3://{self.bucket}/{info.key}", info.size, info.last_modified,
                     tier=info.tags.get(tiers.TAG_KEY), sha256=merged.get(s3.META_SHA256), plain_size=int(size) if size and size.isdigit() else None,
                     revision=facts.get("revision"), cluster=merged.get(s3.META_CLUSTER),
                     recorded_taken_at=merged.get(s3.META_TAKEN_AT), source=merged.get(s3.META_SOURCE),
                     verification=v, key=info.key, described=True, s3_checksum=info.checksum_sha256,
                     facts_from_tags=s3.META_SHA256 not in info.metadata and s3.META_SHA256 in info.tags,
                     etag=info.etag, version_id=info.version_id)

    def open(self, entry: Entry) -> Iterator[bytes]:
        assert entry.key is not None
        try:
            # ChecksumMode: botocore checks a full-object SHA-256 as the body streams (a multipart upload's composite
            # checksum cannot be checked this way; the plaintext's trailer and the age/zstd checks cover it).
            # Pinned to what was listed or described (hostile-inputs 61): that version in a versioned bucket (a
            # version never changes), else If-Match on the listed ETag, which S3 answers with 412 when another object
            # was put there since.
            pin = ({"VersionId": entry.version_id} if entry.version_id and entry.version_id != "null"
                   else {"IfMatch": entry.etag} if entry.etag else {})
            resp = self.client.get_object(Bucket=self.bucket, Key=entry.key, ChecksumMode="ENABLED", **pin)
            yield from resp["Body"].iter_chunks(CHUNK)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if exc.response.get("Error", {}).get("Code") == "PreconditionFailed" or status == 412:
                raise S3Error(f"{entry.location} was replaced since it was listed (it is no longer the object with "
                              f"ETag {entry.etag}): nothing was read from it",
                              f"list again with `{spelling.command('list')}`, then run the command again with the "
                              "name it shows") from exc
            raise s3.translate(exc, "download of", self.bucket, entry.key) from exc
        except BotoCoreError as exc:
            raise s3.translate(exc, "download of", self.bucket, entry.key) from exc

    def put(self, chunks: Iterable[bytes], plain: str, *, compress: bool = False, recipients: Sequence[Any] = (),
            metadata: dict[str, str] | None = None, expected_sha256: str | None = None,
            progress: s3.ProgressFn | None = None, label: str | None = None) -> Entry:
        name, parsed = _stored(plain, compress, recipients)
        key = self.prefix + name
        meta = {**(metadata or {}), s3.META_FORMAT: parsed.format}
        listing = [e for e in self.list() if not e.name.safety]
        earlier = [e.name.taken_at for e in listing]
        # What `latest` may be measured against: names a clock wrote ahead of S3's own are not (hostile-inputs 40).
        trusted = [e for e in listing if not named_after_upload(e)]
        tier = tiers.tier_for(parsed.taken_at, earlier)
        writer = s3.ObjectWriter(self.client, self.bucket, key, meta, progress=progress, tags={tiers.TAG_KEY: tier})
        hasher = TrailerHasher(label or f"snapshot for s3://{self.bucket}/{key}")
        digests: list[SnapshotDigest] = []
        try:
            codec.encode(_verified_chunks(chunks, hasher, expected_sha256, digests), writer.write, compress=compress,
                         recipients=recipients)
            writer.commit()
        except AccessDenied as exc:
            writer.abort()
            raise AccessDenied(exc.message, "the bucket policy lets only the snapshot Lambda and the roles in "
                               "snapshotWriters write snapshots (docs/VAULT.md): add yours with `pulumi config set "
                               "--path 'snapshotWriters[0]' <your role ARN>` and `pulumi up`, or check your "
                               "credentials") from exc
        except BaseException:
            writer.abort()
            raise
        d = digests[0]
        if s3.META_SHA256 not in meta:  # known only now that the stream has ended: tags
            try:
                s3.set_tags(self.client, self.bucket, key, {s3.META_SHA256: d.content_sha256,
                                                            s3.META_SIZE: str(d.size)})
            except DRError:
                pass  # the object is whole and verified; missing tags only hide facts from dr.list
        entry = Entry(S3, parsed, f"s3://{self.bucket}/{key}", writer.size, datetime.now(UTC),
                      sha256=d.content_sha256, plain_size=d.size, key=key, described=True, tier=tier)
        # `latest` moves to it unless a snapshot whose name S3's clock vouches for (not named after its upload) says
        # a later time; the same order ``newest`` picks by. A name ahead of S3's clock is refused by pin_latest.
        later = [e for e in trusted if e.name.taken_at > parsed.taken_at]
        if not parsed.safety and not later:
            failed = self.pin_latest(entry)
            if failed is not None:
                entry = replace(entry, warning=f"the snapshot is stored, but {failed}: `latest` still names the one "
                                               "before it")
        elif not parsed.safety:
            newest_named = max(later, key=lambda e: e.name.taken_at)
            entry = replace(entry, warning=f"the snapshot is stored, but {s3.LATEST_NAME} was not moved to it: "
                                           f"{newest_named.location} has a later time in its name "
                                           f"({iso_utc(newest_named.name.taken_at)}); if this machine's clock is "
                                           "behind, fix it (`date -u`, NTP) and take a backup again")
        return entry

    def latest_alias(self) -> tuple[str, datetime] | None:
        """(key it copies, when the copy was made) of ``<prefix>latest``, or None when there is none."""
        key = self.prefix + s3.LATEST_NAME
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            err = s3.translate(exc, "reading", self.bucket, key)
            if isinstance(err, SnapshotNotFound):
                return None
            raise err from exc
        of = (head.get("Metadata") or {}).get(s3.META_LATEST_OF)
        return (of, head["LastModified"]) if of else None

    def pin_latest(self, entry: Entry) -> DRError | None:
        """Copy ``entry`` server-side to ``<prefix>latest`` (tag ``retention=latest``, which no lifecycle rule expires),
        its metadata naming the snapshot it copies: however long backups stop, one snapshot stays. A failure is a
        warning, not a failure (the snapshot itself is stored): returned, and ``put`` puts it on the entry."""
        assert entry.key is not None
        latest = self.prefix + s3.LATEST_NAME
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=entry.key)
            stored = head.get("LastModified")
            if stored is not None and entry.name.taken_at > stored + FUTURE_SLACK:
                # Its name comes from this machine's clock, which is ahead of S3's: a future-dated `latest` would
                # stay there after the clock is fixed.
                return ConfigError(f"its name's time {iso_utc(entry.name.taken_at)} is after S3 stored it "
                                   f"({iso_utc(stored)}): this machine's clock is ahead, so it was not pinned as "
                                   f"{s3.LATEST_NAME}", "fix the clock (`date -u`, NTP)")
            meta = {**(head.get("Metadata") or {}), s3.META_LATEST_OF: entry.key}
            # A one-pass upload records these as tags (known only at the end), which the copy does not keep.
            if entry.sha256:
                meta[s3.META_SHA256] = entry.sha256
            if entry.plain_size is not None:
                meta[s3.META_SIZE] = str(entry.plain_size)
            # CopyObject (AWS S3 API reference): MetadataDirective/TaggingDirective REPLACE set the copy's own. The
            # checksum: with Object Lock on, S3 refuses writes without Content-MD5 or an x-amz-sdk-checksum-algorithm
            # header (S3 User Guide, "Configuring S3 Object Lock"; snapshotObjectLockDays).
            self.client.copy_object(Bucket=self.bucket, Key=latest, CopySource={"Bucket": self.bucket, "Key": entry.key},
                                    MetadataDirective="REPLACE", Metadata=meta, TaggingDirective="REPLACE",
                                    Tagging=f"{tiers.TAG_KEY}={tiers.LATEST}", ChecksumAlgorithm="SHA256")
        except (ClientError, BotoCoreError) as exc:
            return s3.translate(exc, "copying the newest snapshot to", self.bucket, latest)
        return None

    def record_verification(self, entry: Entry, v: Verification) -> None:
        assert entry.key is not None
        tags = {s3.TAG_VERIFIED_AT: v.verified_at}
        if v.revision is not None:
            tags[s3.TAG_VERIFIED_REVISION] = str(v.revision)
        if v.keys is not None:
            tags[s3.TAG_VERIFIED_KEYS] = str(v.keys)
        if v.sha256:
            tags[TAG_VERIFIED_SHA256] = v.sha256
        if entry.s3_checksum:
            tags[s3.TAG_VERIFIED_CHECKSUM] = entry.s3_checksum
        s3.set_tags(self.client, self.bucket, entry.key, tags)

    def clear_verification(self, entry: Entry) -> Sequence[str]:
        """A verification that failed takes back what claimed the object was good: its ``verified-*`` tags go (the
        tier and the upload's facts stay). Returns the tag keys removed."""
        assert entry.key is not None
        return s3.drop_tags(self.client, self.bucket, entry.key, s3.VERIFIED_TAG_PREFIX)


TAG_VERIFIED_SHA256 = "verified-sha256"
