"""The bbolt meta pages, checked without etcd's tools: what bbolt itself checks when it opens a database.

A snapshot whose SHA-256 trailer matches can still be a database etcd cannot open (a file someone built, or damage
before the trailer was computed). ``etcdutl snapshot status`` finds that; when neither etcdutl nor etcdctl is installed
here (a restore may then go ahead on the trailer alone), this is the check that runs before anything is reset.

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


# --- the page tree, walked without etcd's tools -------------------------------------------------------------------
#
# From etcd-io/bbolt (internal/common/page.go, bucket.go; the format etcd 3.5/3.6 use): page flags branch 0x01, leaf
# 0x02, meta 0x04, freelist 0x10; a branch element is {pos uint32, ksize uint32, pgid uint64}, a leaf element
# {flags uint32, pos uint32, ksize uint32, vsize uint32}, both 16 bytes, ``pos`` counted from the element itself. A
# leaf element with flag 0x01 is a bucket: its value starts with {root pgid uint64, sequence uint64}; root 0 means an
# inline bucket, whose page follows that header inside the value. Every page a tree reaches must carry its own id, a
# branch or leaf flag, and lie (with its overflow pages) below the meta's high-water mark; bbolt panics on anything
# else when it reads it ("page N: has unexpected type/flags", freelist.go / page.go). This is what `etcdutl snapshot
# status` finds on a damaged page, checked here when no etcd tool is at hand (the restore goes ahead on it alone then).

BRANCH, LEAF, META_FLAG, FREELIST = 0x01, 0x02, 0x04, 0x10
BUCKET_LEAF = 0x01
ELEMENT = 16
_PAGE_HEADER_FORMAT = "<QHHI"


class _Walker:
    def __init__(self, data: bytes | memoryview, meta: Meta):
        self.data, self.size = data, meta.page_size
        self.limit = min(meta.pgid, len(data) // meta.page_size)
        self.stack: list[tuple[int, str]] = []

    def header(self, pgid: int) -> tuple[int, int, int]:
        """(flags, count, overflow) of page ``pgid``, checked: inside the database, carrying its own id."""
        if pgid < 2 or pgid >= self.limit:
            raise ValueError(f"page {pgid} is outside the database (pages 2..{self.limit - 1})")
        pid, flags, count, overflow = struct.unpack_from(_PAGE_HEADER_FORMAT, self.data, pgid * self.size)
        if pid != pgid:
            raise ValueError(f"page {pgid} says it is page {pid}")
        if pgid + overflow >= self.limit:
            raise ValueError(f"page {pgid} runs past the database ({overflow} overflow pages)")
        return flags, count, overflow

    def node(self, base: int, end: int, flags: int, count: int, where: str) -> None:
        """Check one page's elements at ``data[base:end]`` (a page, or an inline bucket's page)."""
        if flags not in (BRANCH, LEAF):
            raise ValueError(f"{where} has unexpected type/flags {flags:#x}")
        first = base + PAGE_HEADER
        if first + count * ELEMENT > end:
            raise ValueError(f"{where} has {count} elements, more than fit in it")
        for i in range(count):
            off = first + i * ELEMENT
            if flags == BRANCH:
                pos, ksize, child = struct.unpack_from("<IIQ", self.data, off)
                if off + pos + ksize > end:
                    raise ValueError(f"{where}: branch element {i} points past the page")
                self.stack.append((child, f"page {child}"))
            else:
                self.leaf(off, end, where, i)

    def leaf(self, off: int, end: int, where: str, i: int) -> None:
        eflags, pos, ksize, vsize = struct.unpack_from("<IIII", self.data, off)
        if off + pos + ksize + vsize > end:
            raise ValueError(f"{where}: leaf element {i} points past the page")
        if not eflags & BUCKET_LEAF:
            return
        if vsize < 16:
            raise ValueError(f"{where}: bucket element {i} is too short")
        vstart = off + pos + ksize
        (root,) = struct.unpack_from("<Q", self.data, vstart)
        if root != 0:
            self.stack.append((root, f"page {root}"))
            return
        ibase = vstart + 16  # an inline bucket: its page is in the value
        _pid, iflags, icount, _ov = struct.unpack_from(_PAGE_HEADER_FORMAT, self.data, ibase)
        self.node(ibase, vstart + vsize, iflags, icount, f"{where}: inline bucket {i}")


def walk_pages(data: bytes | memoryview, meta: Meta) -> int:
    """Walk every page the database's buckets reach from ``meta``; the number of pages seen. Raises ``ValueError``
    naming the first page bbolt would refuse. ``data`` is the database (without a snapshot's trailer)."""
    w = _Walker(data, meta)
    seen: set[int] = set()
    w.stack.append((meta.root, f"page {meta.root} (the root bucket)"))
    while w.stack:
        pgid, where = w.stack.pop()
        if pgid in seen:
            raise ValueError(f"{where} is reached twice (a cycle or a shared page)")
        seen.add(pgid)
        flags, count, overflow = w.header(pgid)
        w.node(pgid * w.size, (pgid + overflow + 1) * w.size, flags, count, where)
    if meta.freelist != NO_FREELIST:
        flags, _count, _overflow = w.header(meta.freelist)
        if flags != FREELIST:
            raise ValueError(f"page {meta.freelist} (the freelist) has unexpected type/flags {flags:#x}")
    return len(seen)
