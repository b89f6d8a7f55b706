"""The etcd snapshot hash trailer, checked in one streaming pass.

A snapshot from etcd's Maintenance.Snapshot API is a bbolt database followed by the SHA-256 of everything
before it (32 bytes); clients require ``size % 512 == 32``. bbolt's first page carries the magic 0xED0CDAED
at byte 16, which tells an etcd snapshot from any other file.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dr.core import spelling
from dr.core.errors import CorruptSnapshot, EmptySnapshot, NotASnapshot, TruncatedSnapshot

TRAILER_SIZE = 32
PAGE_ALIGN = 512
BOLT_MAGIC = 0xED0CDAED
BOLT_MAGIC_OFFSET = 16
CHUNK = 1 << 20


@dataclass(frozen=True)
class SnapshotDigest:
    """What one pass over a snapshot learned: its size, its trailer, and the SHA-256 of the whole file."""

    size: int
    content_sha256: str  # sha256 of the bbolt data (equals the trailer when the file is whole)
    file_sha256: str  # sha256 of the whole file, trailer included (what S3's checksum covers)


class TrailerHasher:
    """Feed bytes in order; ``finish()`` checks the trailer. Keeps only the last 32 bytes and one hash state,
    so memory does not grow with the snapshot."""

    def __init__(self, label: str = "snapshot"):
        self.label = label
        self._content = hashlib.sha256()
        self._tail = b""
        self._head = b""
        self.size = 0

    def update(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if len(self._head) < BOLT_MAGIC_OFFSET + 4:
            self._head += data[: BOLT_MAGIC_OFFSET + 4 - len(self._head)]
        if len(data) >= TRAILER_SIZE:
            # No `tail + data` copy of every chunk (it doubled a file check's time): the old tail is content now,
            # and so is all of this chunk but its last 32 bytes.
            self._content.update(self._tail)
            view = memoryview(data)
            self._content.update(view[:-TRAILER_SIZE])
            self._tail = bytes(view[-TRAILER_SIZE:])
            return
        buf = self._tail + data
        if len(buf) > TRAILER_SIZE:
            self._content.update(buf[:-TRAILER_SIZE])
            self._tail = buf[-TRAILER_SIZE:]
        else:
            self._tail = buf

    def _has_bolt_magic(self) -> bool:
        if len(self._head) < BOLT_MAGIC_OFFSET + 4:
            return False
        (magic,) = struct.unpack_from("<I", self._head, BOLT_MAGIC_OFFSET)
        return magic == BOLT_MAGIC

    def finish(self) -> SnapshotDigest:
        """Raise an ``IntegrityError`` subclass unless the data is a whole etcd snapshot."""
        what = self.label
        if self.size == 0:
            raise EmptySnapshot(f"{what} is empty (0 bytes)", "take a new snapshot; this file holds nothing")
        if not self._has_bolt_magic():
            raise NotASnapshot(
                f"{what} is not an etcd snapshot (no bbolt header)",
                "point at a file made by `talosctl etcd snapshot`, `etcdctl snapshot save` or "
                f"`{spelling.command('backup')}`",
            )
        if self.size % PAGE_ALIGN != TRAILER_SIZE:
            raise TruncatedSnapshot(
                f"{what} is truncated: sha256 checksum not found (size {self.size}, expected size % 512 == 32)",
                "the copy is incomplete; download or take the snapshot again",
            )
        expected = self._tail.hex()
        actual = self._content.hexdigest()
        if actual != expected:
            raise CorruptSnapshot(
                f"{what} is corrupt: SHA-256 of its content {actual[:16]}… does not match its trailer {expected[:16]}…",
                "use another snapshot; this one was damaged after it was taken (a backup that just failed this way: "
                "take it again, and if it repeats, the node sends damaged data)",
            )
        # SHA-256 is a running hash: the whole file's digest is the content's state continued over the trailer,
        # so one pass gives both.
        whole = self._content.copy()
        whole.update(self._tail)
        return SnapshotDigest(size=self.size, content_sha256=actual, file_sha256=whole.hexdigest())


def verify_stream(chunks: Iterable[bytes], label: str = "snapshot") -> SnapshotDigest:
    h = TrailerHasher(label)
    for c in chunks:
        h.update(c)
    return h.finish()


def iter_file(f: BinaryIO, chunk: int = CHUNK) -> Iterable[bytes]:
    while True:
        data = f.read(chunk)
        if not data:
            return
        yield data


def verify_file(path: str | Path, label: str | None = None) -> SnapshotDigest:
    """Check a snapshot file's trailer in one read. Raises an ``IntegrityError`` subclass on failure."""
    p = Path(path)
    with open(p, "rb") as f:
        return verify_stream(iter_file(f), label or f"snapshot {p}")
