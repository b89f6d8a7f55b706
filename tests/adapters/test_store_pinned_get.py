"""hostile-inputs 61: an object replaced between its listing (or HEAD) and the GET. The download is pinned to what
was listed: the listed version in a versioned bucket, else If-Match on the listed ETag (S3 answers 412
PreconditionFailed, AWS GetObject API reference), so a replaced object is never read as "a short read, retry".
Against moto's S3 server, which honours both (VersionId and If-Match on GetObject)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from dr.adapters import s3
from dr.adapters.store import S3Store, fetch
from dr.core import naming
from dr.core.errors import ExitCode, S3Error

NAME = naming.snapshot_name(datetime(2026, 12, 6, 3, tzinfo=UTC))
KEY = f"snapshots/{NAME}"


@pytest.fixture
def plain_bucket(s3_client):
    """An unversioned bucket (a talos-backup bucket, a bucket made by hand)."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


def _replace_on_first_get(client, bucket: str, body: bytes) -> list[str]:
    """Put ``body`` under KEY (with another client) just before the store's first GetObject goes out: the window
    between listing/HEAD and GET."""
    other = s3.make_client("us-east-1")
    done: list[str] = []

    def before_get(**_):
        if not done:
            done.append(other.put_object(Bucket=bucket, Key=KEY, Body=body)["ETag"])

    client.meta.events.register("before-call.s3.GetObject", before_get)
    return done


@pytest.mark.parametrize("how", ["listed", "described"])
def test_a_replaced_object_in_an_unversioned_bucket_is_refused_as_replaced(s3_client, plain_bucket, real_snapshot,
                                                                          tmp_path, how):
    s3_client.put_object(Bucket=plain_bucket, Key=KEY, Body=real_snapshot.read_bytes())
    store = S3Store(s3_client, plain_bucket, "snapshots/")
    [entry] = store.list()
    if how == "described":
        entry = store.stat(NAME)
        assert entry.version_id is None  # no versions here: the ETag pins it
    assert entry.etag
    replaced = _replace_on_first_get(s3_client, plain_bucket, b"another object, put after the listing")
    dest = tmp_path / "out.db"
    with pytest.raises(S3Error) as ei:
        fetch(store, entry, dest)
    assert replaced  # the object really was replaced in the window
    err = ei.value
    assert err.exit_code == ExitCode.S3_ERROR
    assert f"s3://{plain_bucket}/{KEY} was replaced since it was listed" in err.message
    assert "short" not in err.message and "ended after" not in err.message
    assert "talos-dr list" in err.hint and "list again" in err.hint
    assert list(tmp_path.iterdir()) == []  # nothing written, no .part


def test_a_replaced_object_in_a_versioned_bucket_is_read_as_the_version_that_was_described(
        s3_client, bucket, real_snapshot, tmp_path):
    s3_client.put_object(Bucket=bucket, Key=KEY, Body=real_snapshot.read_bytes())
    store = S3Store(s3_client, bucket, "snapshots/")
    entry = store.stat(NAME)
    assert entry.version_id and entry.version_id != "null"
    replaced = _replace_on_first_get(s3_client, bucket, b"another object, put after the HEAD")
    digest, _ = fetch(store, entry, tmp_path / "out.db")
    assert replaced
    assert (tmp_path / "out.db").read_bytes() == real_snapshot.read_bytes()
    assert digest.size == real_snapshot.stat().st_size
    # ... while the current object is the replacement
    assert s3_client.get_object(Bucket=bucket, Key=KEY)["Body"].read().startswith(b"another object")


def test_an_unchanged_object_still_downloads_with_the_pin(s3_client, plain_bucket, real_snapshot, tmp_path):
    s3_client.put_object(Bucket=plain_bucket, Key=KEY, Body=real_snapshot.read_bytes())
    store = S3Store(s3_client, plain_bucket, "snapshots/")
    [entry] = store.list()
    fetch(store, entry, tmp_path / "out.db")
    assert (tmp_path / "out.db").read_bytes() == real_snapshot.read_bytes()

