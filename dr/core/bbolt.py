"""The bbolt meta pages, checked without etcd's tools: what bbolt itself checks when it opens a database.

A snapshot whose SHA-256 trailer matches can still be a database etcd cannot open (a file someone built, or damage
before the trailer was computed). ``etcdutl snapshot status`` finds that; when neither etcdutl nor etcdctl is installed
here (hostile-inputs 6), this is the check that runs before anything is reset.

From etcd-io/bbolt (internal/common/meta.go, page.go, db.go): a page starts with a 16-byte header (id uint64,
flags uint16, count uint16, overflow uint32); pages 0 and 1 hold a meta (magic uint32 0xED0CDAED, version uint32 2,
pageSize uint32, flags uint32, root bucket {pgid uint64, sequence uint64}, freelist pgid uint64, pgid uint64 (the
high-water mark), txid uint64, checksum uint64), little-endian. ``Meta.Validate`` requires the magic, the version and
``checksum == FNV-1a 64 of the meta's bytes before the checksum``; bbolt opens the database when either meta page is
valid, and the root and freelist pages must lie below the high-water mark (``Meta.Write`` panics otherwise).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = 0xED0CDAED
VERSION = 2
PAGE_HEADER = 16
META_FORMAT = "<IIIIQQQQQQ"  # magic version pageSize flags root sequence freelist pgid txid checksum
META_SIZE = struct.calcsize(META_FORMAT)  # 64
CHECKSUMMED = META_SIZE - 8  # the checksum covers everything before it
NO_FREELIST = 0xFFFFFFFFFFFFFFFF
PAGE_SIZES = tuple(1 << n for n in range(9, 17))  # 512 B .. 64 KiB: what bbolt can be built with
HEAD_NEEDED = max(PAGE_SIZES) + PAGE_HEADER + META_SIZE  # enough to read meta page 1 at any page size


@dataclass(frozen=True)
class Meta:
    page: int
    page_size: int
    root: int
    freelist: int
    pgid: int
    txid: int


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _meta_at(head: bytes, offset: int, page: int) -> tuple[Meta | None, str]:
    raw = head[offset + PAGE_HEADER: offset + PAGE_HEADER + META_SIZE]
    if len(raw) < META_SIZE:
        return None, f"meta page {page} is missing (the file is too short)"
    magic, version, page_size, _flags, root, _seq, freelist, pgid, txid, checksum = struct.unpack(META_FORMAT, raw)
    if magic != MAGIC:
        return None, f"meta page {page} has no bbolt magic"
    if version != VERSION:
        return None, f"meta page {page} is bbolt version {version}, not {VERSION}"
    if checksum != fnv1a64(raw[:CHECKSUMMED]):
        return None, f"meta page {page}'s checksum does not match"
    if page_size not in PAGE_SIZES:
        return None, f"meta page {page} says the page size is {page_size}"
    if root >= pgid or (freelist >= pgid and freelist != NO_FREELIST):
        return None, f"meta page {page} points above its own high-water mark"
    return Meta(page, page_size, root, freelist, pgid, txid), ""


def check_meta(head: bytes, data_size: int) -> Meta:
    """The meta bbolt would open the database with (the valid one with the higher txid), from the file's first
    ``HEAD_NEEDED`` bytes; ``data_size`` is the database's size (the snapshot without its 32-byte trailer).
    Raises ``ValueError`` saying why bbolt would refuse it."""
    m0, why0 = _meta_at(head, 0, 0)
    # Meta page 1 sits one page in; with page 0 unusable, bbolt falls back to other page sizes: so do we.
    sizes = [m0.page_size] if m0 else list(PAGE_SIZES)
    candidates = [m0]
    why1 = "meta page 1 is unreadable"
    for size in sizes:
        m1, why1 = _meta_at(head, size, 1)
        if m1 is not None and m1.page_size == size:
            candidates.append(m1)
            break
    valid = [m for m in candidates if m is not None]
    if not valid:
        raise ValueError(f"bbolt would not open it: {why0}; {why1}")
    meta = max(valid, key=lambda m: m.txid)
    if meta.pgid * meta.page_size > data_size:
        raise ValueError(f"bbolt would not open it: its meta page says {meta.pgid} pages of {meta.page_size} bytes, "
                         f"but the database is {data_size} bytes")
    return meta
