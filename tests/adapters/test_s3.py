"""The S3 adapter against a real S3 protocol server (moto's server mode on loopback)."""

import hashlib
import os

import pytest

from dr.adapters import s3
from dr.core import errors


def _pending_uploads(client, bucket):
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def _keys(client, bucket):
    return [o["Key"] for o in client.list_object_versions(Bucket=bucket).get("Versions", [])]


def _write(client, bucket, key, data: bytes, **kw) -> s3.ObjectWriter:
    w = s3.ObjectWriter(client, bucket, key, {"cluster": "c"}, **kw)
    for i in range(0, len(data), 1 << 20):
        w.write(data[i:i + (1 << 20)])
    w.commit()
    return w


def test_small_object_is_one_put_with_checksum_metadata_and_tags(s3_client, bucket, real_snapshot):
    data = real_snapshot.read_bytes()
    _write(s3_client, bucket, "snapshots/a.db", data, tags={"retention": "hourly"})
    head = s3_client.head_object(Bucket=bucket, Key="snapshots/a.db", ChecksumMode="ENABLED")
    assert s3_client.get_object(Bucket=bucket, Key="snapshots/a.db")["Body"].read() == data
    assert head["Metadata"] == {"cluster": "c"}
    import base64

    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    tags = s3_client.get_object_tagging(Bucket=bucket, Key="snapshots/a.db")["TagSet"]
    assert tags == [{"Key": "retention", "Value": "hourly"}]  # set with the object, not after it


@pytest.mark.slow
def test_large_object_goes_up_in_parts_with_tags(s3_client, bucket):
    data = os.urandom(s3.PART_SIZE * 2 + 12345)
    w = _write(s3_client, bucket, "snapshots/big.db", data, tags={"retention": "daily"})
    assert w.size == len(data)
    head = s3_client.head_object(Bucket=bucket, Key="snapshots/big.db", ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(data)
    assert s3_client.get_object(Bucket=bucket, Key="snapshots/big.db")["Body"].read() == data
    assert s3_client.get_object_tagging(Bucket=bucket, Key="snapshots/big.db")["TagSet"][0]["Value"] == "daily"
    assert _pending_uploads(s3_client, bucket) == []


@pytest.mark.slow
def test_abort_after_parts_leaves_nothing(s3_client, bucket):
    w = s3.ObjectWriter(s3_client, bucket, "snapshots/cut.db", {})
    w.write(os.urandom(s3.PART_SIZE + 1))  # one part is up
    w.abort()
    w.abort()  # idempotent
    assert _keys(s3_client, bucket) == [] and _pending_uploads(s3_client, bucket) == []


def test_an_existing_key_is_refused_and_kept(s3_client, bucket):
    _write(s3_client, bucket, "snapshots/a.db", b"first")
    with pytest.raises(errors.ConfigError, match="already exists"):
        _write(s3_client, bucket, "snapshots/a.db", b"second")
    assert s3_client.get_object(Bucket=bucket, Key="snapshots/a.db")["Body"].read() == b"first"
    # ... also when the second one is a multipart upload (If-None-Match on CompleteMultipartUpload)
    with pytest.raises(errors.ConfigError, match="already exists"):
        _write(s3_client, bucket, "snapshots/a.db", b"x" * (s3.PART_SIZE + 1))
    assert _pending_uploads(s3_client, bucket) == []


def test_missing_bucket_is_its_own_error(s3_client):
    with pytest.raises(errors.BucketNotFound):
        _write(s3_client, "no-such-bucket-xyz", "snapshots/a.db", b"x")
    with pytest.raises(errors.SnapshotNotFound):
        s3.head_snapshot(s3_client, "no-such-bucket-xyz", "snapshots/a.db")


@pytest.mark.parametrize("uri", ["s3://b/../x", "s3://bucket/a/../../etc/passwd", "s3://bucket/", "s3:///key",
                                 "http://bucket/key", "s3://Bad_Bucket/key", "s3://bucket/a//b"])
def test_bad_uris_are_refused(uri):
    with pytest.raises(errors.ConfigError):
        s3.parse_s3_uri(uri)


def test_good_uri():
    assert s3.parse_s3_uri("s3://my-bucket/snapshots/etcd-snapshot-20260101T000000Z.db") == (
        "my-bucket", "snapshots/etcd-snapshot-20260101T000000Z.db")
