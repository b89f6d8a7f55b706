"""The vault, the writers' and readers' side, against moto's S3 server (tagging, copies and conditional writes are
supported there): tiers tagged with each object, the pinned `latest` copy, `latest` chosen by evidence, no
overwrites, the download size cap; and the same from dr.backup on the sandbox.

Upstream facts: S3 sets tags given with PutObject/CreateMultipartUpload (`x-amz-tagging`) on the new object; CopyObject
with `TaggingDirective=REPLACE` and `MetadataDirective=REPLACE` gives the copy its own; `If-None-Match: *` makes a
PutObject/CompleteMultipartUpload fail with 412 when the key exists (AWS S3 API reference, PutObject, CopyObject,
CompleteMultipartUpload).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dr.adapters import s3
from dr.adapters.store import S3Store, newest
from dr.commands import backup, verify
from dr.commands import list as dr_list
from dr.core import naming, tiers
from dr.core.errors import ConfigError, ExitCode, SnapshotNotFound
from dr.core.integrity import iter_file
from tests.support.tools import require_binary, run_cli

pytestmark = pytest.mark.slow


def _tags(client, bucket, key) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def _put(store: S3Store, snap: Path, when: datetime, **kw):
    with open(snap, "rb") as f:
        return store.put(iter_file(f), naming.snapshot_name(when), compress=True, **kw)


@pytest.fixture
def store(s3_client, bucket):
    return S3Store(s3_client, bucket, "snapshots/")


def test_tiers_are_tagged_with_the_object_and_latest_is_pinned(store, s3_client, bucket, real_snapshot):
    t0 = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # a Monday: first of its month? no, but of the bucket
    times = [t0, t0 + timedelta(hours=1), t0 + timedelta(hours=2), t0 + timedelta(days=1, hours=1)]
    entries = [_put(store, real_snapshot, t) for t in times]
    got = [_tags(s3_client, bucket, e.key)[tiers.TAG_KEY] for e in entries]
    # first in the bucket: monthly; 00:00 Dec 1 opens a new month; 01:00 the same day: hourly; Dec 2: daily
    assert got == [tiers.MONTHLY, tiers.MONTHLY, tiers.HOURLY, tiers.DAILY]
    latest = "snapshots/latest"
    head = s3_client.head_object(Bucket=bucket, Key=latest)
    assert head["Metadata"][s3.META_LATEST_OF] == entries[-1].key
    # the plaintext's SHA-256 and size travel with the copy even when the original has them as tags
    assert head["Metadata"][s3.META_SHA256] == entries[-1].sha256
    assert head["Metadata"][s3.META_SIZE] == str(entries[-1].plain_size)
    assert _tags(s3_client, bucket, latest) == {tiers.TAG_KEY: tiers.LATEST}
    same = s3_client.get_object(Bucket=bucket, Key=latest)["Body"].read()
    assert same == s3_client.get_object(Bucket=bucket, Key=entries[-1].key)["Body"].read()
    # an older snapshot uploaded afterwards does not move latest
    _put(store, real_snapshot, t0 - timedelta(days=3))
    assert s3_client.head_object(Bucket=bucket, Key=latest)["Metadata"][s3.META_LATEST_OF] == entries[-1].key
    # a safety snapshot never becomes latest
    with open(real_snapshot, "rb") as f:
        store.put(iter_file(f), naming.snapshot_name(t0 + timedelta(days=5), safety=True))
    assert s3_client.head_object(Bucket=bucket, Key=latest)["Metadata"][s3.META_LATEST_OF] == entries[-1].key
    # the alias is not listed as a snapshot
    assert all(e.key != latest for e in store.list())


def test_an_existing_key_is_never_overwritten(store, s3_client, bucket, real_snapshot):
    when = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
    first = _put(store, real_snapshot, when)
    before = s3_client.get_object(Bucket=bucket, Key=first.key)["Body"].read()
    with pytest.raises(ConfigError, match="already exists"):
        _put(store, real_snapshot, when)
    assert s3_client.get_object(Bucket=bucket, Key=first.key)["Body"].read() == before
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_latest_is_chosen_by_evidence_not_by_name(store, s3_client, bucket, real_snapshot, capsys):
    """A name in the far future does not win; neither does another cluster's."""
    now = datetime.now(UTC)
    real = _put(store, real_snapshot, now - timedelta(hours=1), metadata={s3.META_CLUSTER: "prod"})
    body = real_snapshot.read_bytes()
    s3_client.put_object(Bucket=bucket, Key="snapshots/etcd-snapshot-20991231T235959Z.db", Body=body)
    s3_client.put_object(Bucket=bucket, Key=f"snapshots/{naming.snapshot_name(now - timedelta(minutes=10))}",
                         Body=body, Metadata={s3.META_CLUSTER: "someone-else"})
    import io

    err = io.StringIO()
    chosen = newest(store, now=now, cluster="prod", err=err)
    assert chosen.key == real.key
    assert "in the future" in err.getvalue() and "someone-else" in err.getvalue()
    assert newest(store, now=now).key != real.key  # without a known cluster the other cluster's newer one wins
    with pytest.raises(SnapshotNotFound):
        newest(store, now=now, cluster="prod", skip=1)


def test_latest_tilde_and_latest_verified(work_s3, real_snapshot):
    store, client, bucket, tmp = work_s3
    now = datetime.now(UTC)
    a = _put(store, real_snapshot, now - timedelta(hours=2))
    b = _put(store, real_snapshot, now - timedelta(hours=1))
    res = run_cli(verify.main, "latest~1", "--bucket", bucket, "--json", "--tmp-dir", str(tmp))
    assert res.code == 0, res
    assert json.loads(res.out)["source"] == a.location
    v = run_cli(verify.main, "latest-verified", "--bucket", bucket, "--json", "--tmp-dir", str(tmp))
    assert v.code == 0 and json.loads(v.out)["source"] == a.location, v  # only a has a verification so far
    assert run_cli(verify.main, "latest", "--bucket", bucket, "--tmp-dir", str(tmp)).code == 0
    v2 = run_cli(verify.main, "latest-verified", "--bucket", bucket, "--json", "--tmp-dir", str(tmp))
    assert json.loads(v2.out)["source"] == b.location
    # the name list prints is accepted as it is
    name = json.loads(run_cli(dr_list.main, "--bucket", bucket, "--json").out)["snapshots"][0]["name"]
    assert run_cli(verify.main, name, "--bucket", bucket, "--tmp-dir", str(tmp)).code == 0


def test_a_download_bigger_than_any_snapshot_is_refused_before_it_starts(work_s3, real_snapshot, monkeypatch):
    store, client, bucket, tmp = work_s3
    _put(store, real_snapshot, datetime.now(UTC) - timedelta(hours=1))
    monkeypatch.setenv("DR_MAX_SNAPSHOT_BYTES", "100")
    res = run_cli(verify.main, "latest", "--bucket", bucket, "--tmp-dir", str(tmp))
    assert res.code == ExitCode.S3_ERROR and "more than any etcd snapshot" in res.err, res
    assert list(tmp.iterdir()) == []


@pytest.fixture
def work_s3(store, s3_client, bucket, tmp_path, monkeypatch):
    require_binary("etcd")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    for k in ("DR_BUCKET", "DR_STACK_OUTPUTS_FILE", "DR_TALOS_DIR", "DR_SNAPSHOT_PREFIX", "DR_AGE_IDENTITY_FILE",
              "DR_AGE_RECIPIENTS", "DR_MAX_SNAPSHOT_BYTES"):
        monkeypatch.delenv(k, raising=False)
    t = tmp_path / "tmp"
    t.mkdir()
    return store, s3_client, bucket, t


def test_backup_tags_and_pins_on_the_sandbox(sandbox_env):
    sb = sandbox_env
    assert run_cli(backup.main, "--save-to-s3").code == 0
    res = run_cli(backup.main, "--save-to-s3")
    assert res.code == 0, res
    client = s3.make_client(sb.region)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=sb.bucket)["Contents"])
    snaps = [k for k in keys if naming.parse(k)]
    assert len(snaps) == 2 and "snapshots/latest" in keys
    assert [_tags(client, sb.bucket, k)[tiers.TAG_KEY] for k in snaps] == [tiers.MONTHLY, tiers.HOURLY]
    assert client.head_object(Bucket=sb.bucket, Key="snapshots/latest")["Metadata"][s3.META_LATEST_OF] == snaps[-1]
    listed = run_cli(dr_list.main, "--json")
    doc = json.loads(listed.out)
    assert doc["in_s3"] == 2 and doc["latest"]["copy_of"].endswith(snaps[-1])
    text = run_cli(dr_list.main)
    assert "pinned copy of" in text.out


def test_one_bad_newest_object_points_at_the_one_before(work_s3, real_snapshot):
    """An empty newest object is skipped for latest; a damaged one says to use latest~1."""
    store, client, bucket, tmp = work_s3
    now = datetime.now(UTC)
    good = _put(store, real_snapshot, now - timedelta(hours=2))
    client.put_object(Bucket=bucket, Key=f"snapshots/{naming.snapshot_name(now - timedelta(minutes=30))}", Body=b"")
    assert newest(store, now=now).key == good.key
    bad = bytearray(real_snapshot.read_bytes())
    bad[len(bad) // 2] ^= 1
    client.put_object(Bucket=bucket, Key=f"snapshots/{naming.snapshot_name(now - timedelta(minutes=10))}",
                      Body=bytes(bad))
    res = run_cli(verify.main, "latest", "--bucket", bucket, "--tmp-dir", str(tmp))
    assert res.code == ExitCode.CORRUPT_SNAPSHOT and "latest~1" in res.err, res
    assert run_cli(verify.main, "latest~1", "--bucket", bucket, "--tmp-dir", str(tmp)).code == 0


def test_a_failed_latest_copy_is_a_warning_on_the_entry(store, s3_client, bucket, real_snapshot, monkeypatch):
    """The snapshot is stored even when the server-side copy to `latest` fails; the caller is told, not left guessing."""
    from botocore.exceptions import ClientError

    def refuse(**kw):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "CopyObject")

    monkeypatch.setattr(s3_client, "copy_object", refuse)
    e = _put(store, real_snapshot, datetime(2026, 11, 30, 1, 0, tzinfo=UTC))
    assert e.warning and "latest" in e.warning and "access denied" in e.warning
    assert s3_client.head_object(Bucket=bucket, Key=e.key)["ContentLength"] == e.size
