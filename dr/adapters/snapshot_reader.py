"""A snapshot's keys and values, read straight from its file: no etcd, no throwaway server, no port.

``SnapshotReader(path)`` maps the file read-only, opens its bbolt tree at the meta page bbolt would use
(dr.core.bbolt), replays the ``key`` bucket's revisions (dr.core.mvcc) and keeps, per live key, only where its newest
revision lies in the file; values are read back from the map on demand. Memory grows with the number of keys, not
with the snapshot's size. The caller is expected to have checked the SHA-256 trailer already (dr.commands.source).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path

from dr.core import bbolt, mvcc
from dr.core.bbolt_tree import Item, Tree
from dr.core.errors import CorruptSnapshot, NotASnapshot

TRAILER = 32


class SnapshotReader:
    def __init__(self, path: Path, label: str | None = None):
        self.path = Path(path)
        self.label = label or str(path)
        self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        self._map: mmap.mmap | None = None
        try:
            size = os.fstat(self._file.fileno()).st_size
            if size == 0:
                raise NotASnapshot(f"{self.label} is empty", "use another snapshot")
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            self.size = size
            data_size = size - TRAILER if size % 512 == TRAILER else size
            try:
                meta = bbolt.check_meta(self._map[:bbolt.HEAD_NEEDED], data_size)
            except ValueError as exc:
                raise NotASnapshot(f"{self.label} is not an etcd database: {exc}", "use another snapshot") from exc
            self.page_size = meta.page_size
            self.tree = Tree(self._map, meta)
            try:
                self.store = self._replay()
            except ValueError as exc:
                raise CorruptSnapshot(f"{self.label} cannot be read: {exc}",
                                      "use another snapshot; `talos-dr verify` on this one says more") from exc
        except BaseException:
            self.close()
            raise

    def _replay(self) -> mvcc.Store[Item]:
        meta = {it.key: self.tree.value(it) for it in self.tree.items(mvcc.META_BUCKET) if not it.bucket}
        finished = mvcc.compact_revision(meta.get(mvcc.FINISHED_COMPACT))
        scheduled = mvcc.compact_revision(meta.get(mvcc.SCHEDULED_COMPACT))
        entries = ((it.key, self.tree.value(it), it) for it in self.tree.items(mvcc.KEY_BUCKET) if not it.bucket)
        return mvcc.replay(entries, finished, scheduled)

    @property
    def revision(self) -> int:
        return self.store.revision

    @property
    def keys(self) -> list[mvcc.Live[Item]]:
        return self.store.keys

    def value(self, live: mvcc.Live[Item]) -> bytes:
        try:
            return bytes(mvcc.decode_kv(self.tree.value(live.loc)).value)
        except ValueError as exc:
            raise CorruptSnapshot(f"{self.label}: the value of {live.key[:200]!r} cannot be read: {exc}",
                                  "use another snapshot") from exc

    def items(self, prefix: bytes = b"") -> Iterator[tuple[mvcc.Live[Item], bytes]]:
        for live in self.store.keys:
            if live.key.startswith(prefix):
                yield live, self.value(live)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        self._file.close()

    def __enter__(self) -> SnapshotReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
