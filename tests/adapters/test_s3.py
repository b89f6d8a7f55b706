"""The S3 adapter against a real S3 protocol server (moto's server mode on loopback)."""

import hashlib
import os
import signal
import time
from datetime import UTC, datetime

import pytest

from dr.adapters import s3
from dr.core import errors


def _pending_uploads(client, bucket):
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def _keys(client, bucket):
    return [o["Key"] for o in client.list_object_versions(Bucket=bucket).get("Versions", [])]


def test_upload_file_is_byte_identical_with_checksum_and_metadata(s3_client, bucket, real_snapshot):
    taken = datetime(2026, 11, 24, 1, 2, 3, tzinfo=UTC)
    res = s3.upload_snapshot_file(s3_client, bucket, "snapshots/a.db", real_snapshot, taken_at=taken,
                                  cluster="c1", revision=7)
    data = real_snapshot.read_bytes()
    body = s3_client.get_object(Bucket=bucket, Key="snapshots/a.db")["Body"].read()
    assert body == data
    assert res.size == len(data) and res.sha256 == data[-32:].hex()
    info = s3.head_snapshot(s3_client, bucket, "snapshots/a.db")
    assert info.metadata[s3.META_SHA256] == data[-32:].hex()
    assert info.metadata[s3.META_REVISION] == "7"
    assert info.metadata[s3.META_CLUSTER] == "c1"
    assert info.metadata[s3.META_TAKEN_AT] == "2026-11-24T01:02:03Z"
    assert info.checksum_sha256  # S3 stored a SHA-256 checksum


@pytest.mark.slow
def test_multipart_upload_of_large_snapshot(s3_client, bucket, tmp_path, real_snapshot):
    # A synthetic well-formed snapshot larger than the multipart threshold: bbolt header from a real snapshot,
    # padding, and a correct trailer.
    head = real_snapshot.read_bytes()[:-32]
    body = head + b"\0" * (3 * s3.PART_SIZE + 512 * 7 - len(head) % 512)
    body = body[: len(body) - len(body) % 512]
    big = tmp_path / "big.db"
    big.write_bytes(body + hashlib.sha256(body).digest())
    res = s3.upload_snapshot_file(s3_client, bucket, "snapshots/big.db", big,
                                  taken_at=datetime.now(UTC), cluster="c")
    assert res.size == big.stat().st_size
    got = s3_client.get_object(Bucket=bucket, Key="snapshots/big.db")["Body"].read()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(big.read_bytes()).hexdigest()
    assert _pending_uploads(s3_client, bucket) == []


@pytest.mark.parametrize("size_parts", [0, 3], ids=["single-put", "multipart"])
def test_corrupt_stream_leaves_no_object(s3_client, bucket, real_snapshot, size_parts):
    data = bytearray(real_snapshot.read_bytes())
    if size_parts:
        head = bytes(data[:-32])
        pad = b"\0" * (size_parts * s3.PART_SIZE)
        data = bytearray(head + pad + hashlib.sha256(head + pad).digest())
    data[len(data) // 2] ^= 0xFF
    chunks = (bytes(data[i : i + 65536]) for i in range(0, len(data), 65536))
    with pytest.raises(errors.CorruptSnapshot):
        s3.upload_snapshot_stream(s3_client, bucket, "snapshots/bad.db", chunks, {})
    assert _keys(s3_client, bucket) == []
    assert _pending_uploads(s3_client, bucket) == []


def test_ctrl_c_during_upload_leaves_no_object(s3_client, bucket, real_snapshot):
    head = real_snapshot.read_bytes()[:-32]

    def chunks():
        yield head
        for i in range(6):
            if i == 2:  # Ctrl-C reaches the main thread while parts are in flight
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.3)
            yield b"\0" * s3.PART_SIZE

    with pytest.raises(KeyboardInterrupt):
        s3.upload_snapshot_stream(s3_client, bucket, "snapshots/cut.db", chunks(), {})
    assert _keys(s3_client, bucket) == []
    assert _pending_uploads(s3_client, bucket) == []


def test_source_cut_mid_stream_leaves_no_object_and_reports_the_source(s3_client, bucket, real_snapshot):
    head = real_snapshot.read_bytes()[:-32]

    def chunks():
        yield head
        for _ in range(2):
            yield b"\0" * s3.PART_SIZE
        raise errors.NodeUnreachable("node went away mid-stream")

    with pytest.raises(errors.NodeUnreachable, match="mid-stream"):
        s3.upload_snapshot_stream(s3_client, bucket, "snapshots/cut.db", chunks(), {})
    assert _keys(s3_client, bucket) == []
    assert _pending_uploads(s3_client, bucket) == []


def test_missing_bucket_and_key(s3_client, bucket, real_snapshot, tmp_path):
    with pytest.raises(errors.BucketNotFound):
        s3.upload_snapshot_file(s3_client, "no-such-bucket-xyz", "snapshots/a.db", real_snapshot,
                                taken_at=datetime.now(UTC), cluster="c")
    with pytest.raises(errors.SnapshotNotFound):
        s3.download_snapshot(s3_client, bucket, "snapshots/nope.db", tmp_path / "x.db")
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "x.db.part").exists()


def test_download_round_trip_and_corrupt_object(s3_client, bucket, real_snapshot, tmp_path):
    s3.upload_snapshot_file(s3_client, bucket, "snapshots/a.db", real_snapshot,
                            taken_at=datetime.now(UTC), cluster="c")
    digest, info = s3.download_snapshot(s3_client, bucket, "snapshots/a.db", tmp_path / "a.db")
    assert (tmp_path / "a.db").read_bytes() == real_snapshot.read_bytes()
    assert (tmp_path / "a.db").stat().st_mode & 0o777 == 0o600
    bad = bytearray(real_snapshot.read_bytes())
    bad[100] ^= 1
    s3_client.put_object(Bucket=bucket, Key="snapshots/bad.db", Body=bytes(bad))
    with pytest.raises(errors.CorruptSnapshot):
        s3.download_snapshot(s3_client, bucket, "snapshots/bad.db", tmp_path / "bad.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.db"]


@pytest.mark.slow
def test_listing_is_newest_first_ignores_non_snapshots_and_pages(s3_client, bucket):
    names = [f"snapshots/etcd-snapshot-2026010{d}T000000Z.db" for d in range(1, 6)]
    for n in names + ["snapshots/README.txt", "snapshots/etcd-snapshot-bad.db", "other/etcd-snapshot-20260101T000000Z.db"]:
        s3_client.put_object(Bucket=bucket, Key=n, Body=b"x")
    for i in range(1001):
        s3_client.put_object(Bucket=bucket, Key=f"snapshots/junk-{i:04d}", Body=b"")
    s3_client.put_object(Bucket=bucket, Key="snapshots/etcd-snapshot-20270101T000000Z.db", Body=b"yy")
    got = s3.list_snapshots(s3_client, bucket, "snapshots/")
    assert [g.key for g in got] == ["snapshots/etcd-snapshot-20270101T000000Z.db"] + names[::-1]
    assert got[0].size == 2


@pytest.mark.parametrize("uri", ["s3://b/../x", "s3://bucket/a/../../etc/passwd", "s3://bucket/", "s3:///key",
                                 "http://bucket/key", "s3://Bad_Bucket/key", "s3://bucket/a//b"])
def test_bad_uris_are_refused(uri):
    with pytest.raises(errors.ConfigError):
        s3.parse_s3_uri(uri)


def test_good_uri():
    assert s3.parse_s3_uri("s3://my-bucket/snapshots/etcd-snapshot-20260101T000000Z.db") == (
        "my-bucket", "snapshots/etcd-snapshot-20260101T000000Z.db")
