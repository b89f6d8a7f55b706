"""Reading a bbolt database's buckets without etcd: the pages under the root bucket, walked in key order.

``dr.core.bbolt`` checks the meta pages (what bbolt checks when it opens a file); this module reads what they point
to, so ``talos-dr show``/``diff``/``extract`` can look inside a snapshot with no etcd binary and no throwaway server.

The layout, from etcd-io/bbolt v1.4.3 (the version etcd v3.6.12's server/go.mod pins), internal/common/page.go and
bucket.go, all little-endian:
- a page starts with a 16-byte header: id uint64, flags uint16 (0x01 branch, 0x02 leaf, 0x04 meta, 0x10 freelist),
  count uint16, overflow uint32 (the page continues over ``overflow`` more pages);
- a branch page holds ``count`` 16-byte elements {pos uint32, ksize uint32, pgid uint64} after its header; a leaf
  page ``count`` 16-byte elements {flags uint32, pos uint32, ksize uint32, vsize uint32}. ``pos`` is counted from
  the element itself; the key follows at ``pos`` and the value right after it;
- a leaf element with flag 0x01 (BucketLeafFlag) is a sub-bucket: its value starts with the 16-byte InBucket
  {root pgid uint64, sequence uint64}; ``root == 0`` means the bucket is inline, its one leaf page follows the header
  inside the value.
The meta page's ``root`` is the page of the root bucket, whose leaf elements are the top-level buckets ("key",
"meta", ... in etcd).

Everything here reads from a buffer (bytes or an mmap) and checks every offset against it: a damaged page is a
``ValueError`` saying which page, never an IndexError or an endless loop.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from dr.core.bbolt import PAGE_HEADER, Meta

BRANCH = 0x01
LEAF = 0x02
BUCKET_LEAF_FLAG = 0x01
ELEMENT = 16  # branchPageElement and leafPageElement are both 16 bytes
IN_BUCKET = 16  # InBucket: root pgid, sequence
MAX_DEPTH = 64  # a B+tree of a database bbolt can address is far shallower; deeper means a loop

_HEADER = struct.Struct("<QHHI")
_BRANCH = struct.Struct("<IIQ")
_LEAF = struct.Struct("<IIII")


@dataclass(frozen=True)
class Item:
    """One leaf entry: its key, and where its value lies in the buffer (``offset``, ``size``)."""

    key: bytes
    offset: int
    size: int
    bucket: bool  # a sub-bucket, not a value


class Tree:
    """The database in ``buf`` (the snapshot's bytes, trailer or not), opened at ``meta``."""

    def __init__(self, buf, meta: Meta):
        self.buf = buf
        self.meta = meta
        self.size = len(buf)

    def _page_at(self, offset: int, what: str) -> tuple[int, int, int]:
        if offset < 0 or offset + PAGE_HEADER > self.size:
            raise ValueError(f"{what} lies outside the file (offset {offset}, file {self.size} bytes)")
        _id, flags, count, overflow = _HEADER.unpack_from(self.buf, offset)
        end = offset + (overflow + 1) * self.meta.page_size
        if end > self.size:
            raise ValueError(f"{what} runs past the end of the file ({overflow} overflow pages)")
        return flags, count, end

    def _walk(self, offset: int, what: str, depth: int, seen: set[int]) -> Iterator[Item]:
        # Every page of a B+tree has one parent: a page reached twice is a damaged (or crafted) file, and walking it
        # again could take time exponential in the depth.
        if offset in seen:
            raise ValueError(f"{what} is referenced twice in one tree (damaged pages)")
        seen.add(offset)
        if depth > MAX_DEPTH:
            raise ValueError(f"{what}: the tree is deeper than {MAX_DEPTH} levels (a loop in damaged pages)")
        flags, count, end = self._page_at(offset, what)
        base = offset + PAGE_HEADER
        if base + count * ELEMENT > end:
            raise ValueError(f"{what}: {count} elements do not fit in the page")
        if flags == BRANCH:
            for i in range(count):
                el = base + i * ELEMENT
                _pos, _ksize, pgid = _BRANCH.unpack_from(self.buf, el)
                if pgid < 2 or pgid >= self.meta.pgid:
                    raise ValueError(f"{what}: branch element {i} points at page {pgid}, outside 2..{self.meta.pgid}")
                yield from self._walk(pgid * self.meta.page_size, f"page {pgid}", depth + 1, seen)
        elif flags == LEAF:
            for i in range(count):
                el = base + i * ELEMENT
                eflags, pos, ksize, vsize = _LEAF.unpack_from(self.buf, el)
                k0 = el + pos
                v0 = k0 + ksize
                if v0 + vsize > end:
                    raise ValueError(f"{what}: leaf element {i} runs past its page")
                yield Item(bytes(self.buf[k0:v0]), v0, vsize, bool(eflags & BUCKET_LEAF_FLAG))
        else:
            raise ValueError(f"{what} is neither a branch nor a leaf page (flags {flags:#x})")

    def _bucket_items(self, root: int, inline_at: int | None, what: str) -> Iterator[Item]:
        if root == 0:
            if inline_at is None:
                raise ValueError(f"{what} has no root page")
            # An inline bucket: its leaf page sits in the value, right after the InBucket header.
            yield from self._walk_inline(inline_at, what)
            return
        if root < 2 or root >= self.meta.pgid:
            raise ValueError(f"{what}'s root page {root} is outside 2..{self.meta.pgid}")
        yield from self._walk(root * self.meta.page_size, what, 0, set())

    def _walk_inline(self, offset: int, what: str) -> Iterator[Item]:
        if offset + PAGE_HEADER > self.size:
            raise ValueError(f"{what}: its inline page lies outside the file")
        _id, flags, count, _overflow = _HEADER.unpack_from(self.buf, offset)
        if flags != LEAF:
            raise ValueError(f"{what}: its inline page is not a leaf (flags {flags:#x})")
        base = offset + PAGE_HEADER
        for i in range(count):
            el = base + i * ELEMENT
            if el + ELEMENT > self.size:
                raise ValueError(f"{what}: inline element {i} lies outside the file")
            eflags, pos, ksize, vsize = _LEAF.unpack_from(self.buf, el)
            k0 = el + pos
            v0 = k0 + ksize
            if v0 + vsize > self.size:
                raise ValueError(f"{what}: inline element {i} runs past the end of the file")
            yield Item(bytes(self.buf[k0:v0]), v0, vsize, bool(eflags & BUCKET_LEAF_FLAG))

    def buckets(self) -> dict[bytes, Item]:
        """The top-level buckets by name."""
        return {it.key: it for it in self._bucket_items(self.meta.root, None, "the root bucket") if it.bucket}

    def items(self, name: bytes) -> Iterator[Item]:
        """Every entry of the top-level bucket ``name`` in key order; nothing when there is no such bucket."""
        b = self.buckets().get(name)
        if b is None:
            return
        if b.size < IN_BUCKET:
            raise ValueError(f"bucket {name!r}'s header is {b.size} bytes, not {IN_BUCKET}")
        root, _seq = struct.unpack_from("<QQ", self.buf, b.offset)
        yield from self._bucket_items(root, b.offset + IN_BUCKET, f"bucket {name.decode(errors='replace')!r}")

    def value(self, item: Item) -> bytes:
        return bytes(self.buf[item.offset:item.offset + item.size])
