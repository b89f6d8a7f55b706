"""etcd's multi-version store as it lies in the snapshot's bbolt file: which value of each key a client would see.

From etcd v3.6.12:
- server/storage/schema/bucket.go: the revisions live in bucket ``key``; bucket ``meta`` holds
  ``finishedCompactRev`` and ``scheduledCompactRev``.
- server/storage/mvcc/revision.go: a bucket key is the revision, 8-byte big-endian main revision, ``_``, 8-byte
  big-endian sub revision (``revBytesLen = 8 + 1 + 8``); a deletion is the same with a trailing ``t``
  (``markTombstone``, ``markedRevBytesLen``).
- api/mvccpb/kv.proto: each value is a ``mvccpb.KeyValue``: key = 1, create_revision = 2, mod_revision = 3,
  version = 4, value = 5, lease = 6 (a tombstone's holds the key only).
- server/storage/mvcc/kvstore.go ``restore``: the index is rebuilt by reading every revision in order, so the newest
  revision of a key is its value and a key whose newest revision is a tombstone is gone. The store's revision is the
  newest main revision read, raised to the finished (then the scheduled) compaction's revision when that is higher;
  store.go ``UnsafeReadFinishedCompact`` reads those as revisions (the main part counts).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from dr.core.protoschema import build

REV_BYTES = 8 + 1 + 8
MARKED_REV_BYTES = REV_BYTES + 1
TOMBSTONE = ord("t")
KEY_BUCKET = b"key"
META_BUCKET = b"meta"
FINISHED_COMPACT = b"finishedCompactRev"
SCHEDULED_COMPACT = b"scheduledCompactRev"

_classes = build("mvccpb", {"KeyValue": [
    ("key", 1, "bytes"), ("create_revision", 2, "int64"), ("mod_revision", 3, "int64"), ("version", 4, "int64"),
    ("value", 5, "bytes"), ("lease", 6, "int64"),
]}, syntax="proto3")
KeyValue = _classes["KeyValue"]


@dataclass(frozen=True)
class Revision:
    main: int
    sub: int
    tombstone: bool


def parse_revision(raw: bytes) -> Revision:
    """A ``key`` bucket key; ``ValueError`` when it is not one (revision.go ``BytesToBucketKey`` panics there)."""
    if len(raw) not in (REV_BYTES, MARKED_REV_BYTES) or raw[8] != ord("_"):
        raise ValueError(f"{raw[:24]!r} is not an etcd revision ({len(raw)} bytes)")
    main, = struct.unpack_from(">q", raw, 0)
    sub, = struct.unpack_from(">q", raw, 9)
    return Revision(main, sub, len(raw) == MARKED_REV_BYTES and raw[-1] == TOMBSTONE)


def decode_kv(raw: bytes):
    """A ``mvccpb.KeyValue`` from its bytes (the protobuf runtime parses; ``ValueError`` on damage)."""
    kv = KeyValue()
    try:
        kv.ParseFromString(raw)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise ValueError(f"a revision's value is not an etcd KeyValue: {exc}") from exc
    return kv


L = TypeVar("L")


@dataclass(frozen=True)
class Live(Generic[L]):
    """The newest revision of one live key: its mod revision and where its KeyValue lies (``loc``)."""

    key: bytes
    mod_revision: int
    create_revision: int
    version: int
    loc: L


@dataclass
class Store(Generic[L]):
    revision: int
    keys: list[Live[L]]  # in key order, as a range over everything returns them
    revisions: int  # entries in the key bucket (every revision kept, tombstones too)
    compacted: int  # the finished compaction's revision (0: never compacted)


def replay(entries: Iterable[tuple[bytes, bytes, L]], finished_compact: int = 0,
           scheduled_compact: int = 0) -> Store[L]:
    """The live keys from the ``key`` bucket's ``(revision key, KeyValue bytes, loc)`` entries in bucket order
    (ascending revision). Only keys and revisions are kept in memory; values stay where ``loc`` says."""
    index: dict[bytes, Live[L]] = {}
    newest = 0
    n = 0
    for raw_rev, raw_kv, loc in entries:
        rev = parse_revision(raw_rev)
        kv = decode_kv(raw_kv)
        n += 1
        newest = max(newest, rev.main)
        if rev.tombstone:
            index.pop(kv.key, None)
        else:
            index[kv.key] = Live(kv.key, kv.mod_revision or rev.main, kv.create_revision, kv.version, loc)
    revision = max(newest, finished_compact)
    revision = max(revision, scheduled_compact)
    return Store(revision, [index[k] for k in sorted(index)], n, finished_compact)


def compact_revision(raw: bytes | None) -> int:
    """``finishedCompactRev``/``scheduledCompactRev``'s main revision (0 when absent)."""
    if not raw:
        return 0
    return parse_revision(raw).main


def iter_values(store: Store[L], read) -> Iterator[tuple[Live[L], bytes]]:
    """Each live key with its value: ``read(loc)`` gives the KeyValue bytes back."""
    for live in store.keys:
        yield live, decode_kv(read(live.loc)).value
