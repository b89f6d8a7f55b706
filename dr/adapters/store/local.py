"""The local folder store: ``.talos/snapshots`` and its ``downloads``, one file per snapshot, verifications in
``.verified.json`` beside them."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dr.adapters import codec, s3
from dr.adapters.fsutil import atomic_write, atomic_writer, read_state_file
from dr.adapters.store.protocol import CATALOG_NAME, LOCAL, Entry, Verification, find, newest_first, not_found
from dr.adapters.store.transfer import stored_name, verified_chunks
from dr.core import naming, spelling
from dr.core.errors import DiskFull, SnapshotNotFound
from dr.core.integrity import SnapshotDigest, TrailerHasher, iter_file


def _verification(rec: dict[str, Any]) -> Verification:
    return Verification(rec.get("verified_at", ""), rec.get("revision"), rec.get("keys"), rec.get("sha256"))



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
        name, parsed = stored_name(plain, compress, recipients)
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

                codec.encode(verified_chunks(chunks, hasher, expected_sha256, digests), write, compress=compress,
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
            # Never blocks on a FIFO planted there (opening one waits for a writer): a regular file or
            # nothing.
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

