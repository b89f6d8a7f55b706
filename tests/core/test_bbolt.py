"""dr.core.bbolt: the meta-page checks bbolt makes on open (etcd-io/bbolt internal/common/meta.go Validate, Sum64;
db.go opens with either valid meta), on a snapshot etcdctl made, and the refusal before any reset when no etcd tool
is installed."""

from __future__ import annotations

import hashlib
import struct

import pytest

from dr.commands.restore.command import check_bbolt_meta
from dr.commands.source import Fetched
from dr.core import bbolt
from dr.core.errors import CorruptSnapshot
from dr.core.integrity import verify_stream

pytestmark = pytest.mark.slow  # the session's real etcd makes the snapshot


def _with_trailer(db: bytes) -> bytes:
    return db + hashlib.sha256(db).digest()


def _check(data: bytes) -> bbolt.Meta:
    return bbolt.check_meta(data[: bbolt.HEAD_NEEDED], len(data) - 32)


def test_a_snapshot_etcdctl_made_passes(real_snapshot):
    meta = _check(real_snapshot.read_bytes())
    assert meta.page_size == 4096 and meta.pgid * meta.page_size <= real_snapshot.stat().st_size


def test_fnv1a64_matches_the_reference_vectors():
    # FNV-1a 64 test vectors (draft-eastlake-fnv, the same as Go's hash/fnv New64a)
    assert bbolt.fnv1a64(b"") == 0xCBF29CE484222325
    assert bbolt.fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert bbolt.fnv1a64(b"foobar") == 0x85944171F73967E8


def test_one_damaged_meta_page_is_survivable_two_are_not(real_snapshot):
    db = bytearray(real_snapshot.read_bytes()[:-32])
    db[bbolt.PAGE_HEADER + 40] ^= 0x01  # page 0's pgid: its checksum no longer matches
    assert _check(_with_trailer(bytes(db))).page == 1  # bbolt opens with meta page 1
    db[4096 + bbolt.PAGE_HEADER + 40] ^= 0x01
    with pytest.raises(ValueError, match="checksum"):
        _check(_with_trailer(bytes(db)))


def test_a_high_water_mark_beyond_the_file_is_refused(real_snapshot):
    db = bytearray(real_snapshot.read_bytes()[:-32])
    for page in (0, 1):
        off = page * 4096 + bbolt.PAGE_HEADER
        fields = list(struct.unpack_from(bbolt.META_FORMAT, db, off))
        fields[7] = 10_000  # pgid
        fields[9] = bbolt.fnv1a64(struct.pack(bbolt.META_FORMAT, *fields)[: bbolt.CHECKSUMMED])
        struct.pack_into(bbolt.META_FORMAT, db, off, *fields)
    with pytest.raises(ValueError, match="10000 pages"):
        _check(_with_trailer(bytes(db)))


def test_restore_refuses_before_anything_when_no_etcd_tool_could_look(real_snapshot, tmp_path):
    """A file with bbolt's magic and a valid SHA-256 trailer, but no valid meta page: refused (exit 7)."""
    db = bytearray(real_snapshot.read_bytes()[:-32])
    db[bbolt.PAGE_HEADER + 8] ^= 0xFF  # page 0's page size
    db[4096 + bbolt.PAGE_HEADER + 8] ^= 0xFF
    data = _with_trailer(bytes(db))
    path = tmp_path / "etcd-snapshot-20260101T000000Z.db"
    path.write_bytes(data)
    digest = verify_stream([data])  # the trailer check alone passes
    with pytest.raises(CorruptSnapshot, match="not a database etcd can open"):
        check_bbolt_meta(Fetched(path, str(path), digest))
