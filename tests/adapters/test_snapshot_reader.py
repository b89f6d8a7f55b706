"""dr.adapters.snapshot_reader against snapshots real etcd wrote (etcdctl snapshot save): every live key with its
newest value, deleted keys gone, the revision etcd itself reports, whatever the tree's shape (branch pages, overflow
pages, inline buckets, compaction)."""

from __future__ import annotations

import json

import pytest

from dr.adapters.etcdlocal import snapshot_status
from dr.adapters.snapshot_reader import SnapshotReader
from dr.core.errors import CorruptSnapshot, NotASnapshot
from tests.support.tools import start_etcd


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    e = start_etcd(tmp_path_factory.mktemp("reader-etcd"))
    try:
        yield e
    finally:
        e.proc.terminate()
        e.proc.wait(10)


def _expected(e) -> dict[bytes, tuple[bytes, int]]:
    """What etcd itself says is live: key -> (value, mod_revision), from `etcdctl get -w json`."""
    import base64

    doc = json.loads(e.ctl("get", "", "--from-key", "-w", "json"))
    return {base64.b64decode(kv["key"]): (base64.b64decode(kv.get("value", "")), int(kv["mod_revision"]))
            for kv in doc.get("kvs", [])}


def test_small_snapshot_newest_values_and_deletions(etcd, tmp_path):
    etcd.put("/registry/configmaps/a/one", "v1")
    etcd.put("/registry/configmaps/a/one", "v2")  # overwritten: the newest wins
    etcd.put("/registry/secrets/a/gone", "x")
    etcd.ctl("del", "/registry/secrets/a/gone")  # deleted: a tombstone, the key is gone
    etcd.put("/registry/secrets/a/gone-then-back", "1")
    etcd.ctl("del", "/registry/secrets/a/gone-then-back")
    etcd.put("/registry/secrets/a/gone-then-back", "2")
    snap = etcd.snapshot(tmp_path / "s.db")
    with SnapshotReader(snap) as r:
        got = {live.key: (value, live.mod_revision) for live, value in r.items()}
        assert got == _expected(etcd)
        assert got[b"/registry/configmaps/a/one"][0] == b"v2"
        assert b"/registry/secrets/a/gone" not in got
        assert got[b"/registry/secrets/a/gone-then-back"][0] == b"2"
        assert r.revision == snapshot_status(snap).revision


def test_many_keys_big_values_and_compaction(etcd, tmp_path):
    # Enough keys for branch pages, a value bigger than a page (overflow), then a compaction that drops history.
    txn = "".join(f"put /registry/pods/ns{i % 7}/p{i:05d} {'x' * (i % 300 + 1)}\n" for i in range(3000))
    # etcdctl has no batch put: a txn of puts per 100 keys keeps this test quick.
    lines = txn.splitlines()
    for start in range(0, len(lines), 100):
        body = "\n" + "\n".join(lines[start:start + 100]) + "\n\n\n"  # no compares, these puts, no failure ops
        etcd.ctl("txn", input=body.encode())
    etcd.put("/registry/configmaps/big/blob", "y" * 20000)
    rev = int(json.loads(etcd.ctl("get", "/registry/configmaps/big/blob", "-w", "json"))["header"]["revision"])
    for i in range(0, 3000, 3):
        etcd.ctl("del", f"/registry/pods/ns{i % 7}/p{i:05d}")
    etcd.ctl("compact", "--physical", str(rev))  # --physical: returns once the backend dropped the history
    snap = etcd.snapshot(tmp_path / "big.db")
    with SnapshotReader(snap) as r:
        got = {live.key: (value, live.mod_revision) for live, value in r.items()}
        assert got == _expected(etcd)
        assert r.revision == snapshot_status(snap).revision
        assert r.store.compacted == rev
        assert [lv.key for lv in r.keys] == sorted(got)
        assert sum(k.startswith(b"/registry/pods/") for k in got) == 2000 and got[b"/registry/configmaps/big/blob"][0] == b"y" * 20000


def test_not_a_database(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\0" * 8192)
    with pytest.raises(NotASnapshot):
        SnapshotReader(bad)


def test_damaged_page_is_a_clear_error(etcd, tmp_path):
    snap = etcd.snapshot(tmp_path / "d.db")
    with SnapshotReader(snap) as r:
        root_page = r.tree.meta.root
        page = r.page_size
    data = bytearray(snap.read_bytes())
    data[root_page * page + 8: root_page * page + 10] = b"\x7f\x00"  # the root page's flags: neither branch nor leaf
    snap.write_bytes(bytes(data))
    with pytest.raises(CorruptSnapshot, match="neither a branch nor a leaf"):
        SnapshotReader(snap)


def test_a_page_referenced_twice_is_refused_not_walked_again(etcd, tmp_path):
    import struct

    lines = [f"put /registry/configmaps/loop/cm{i:04d} {'z' * 200}" for i in range(600)]
    for start in range(0, len(lines), 100):
        etcd.ctl("txn", input=("\n" + "\n".join(lines[start:start + 100]) + "\n\n\n").encode())
    snap = etcd.snapshot(tmp_path / "loop.db")
    with SnapshotReader(snap) as r:
        key_bucket = r.tree.buckets()[b"key"]
        root, _ = struct.unpack_from("<QQ", r.tree.buf, key_bucket.offset)
        page = r.page_size
    data = bytearray(snap.read_bytes())
    base = root * page
    flags, count = struct.unpack_from("<HH", data, base + 8)
    assert flags == 0x01 and count >= 2  # the key bucket's root is a branch page
    first_child = struct.unpack_from("<Q", data, base + 16 + 8)[0]
    struct.pack_into("<Q", data, base + 16 + 16 + 8, first_child)  # the second element points at the first's page
    snap.write_bytes(bytes(data))
    with pytest.raises(CorruptSnapshot, match="referenced twice"):
        SnapshotReader(snap)
