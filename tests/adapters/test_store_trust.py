"""Facts a writer cannot rewrite: what restore and `latest-verified` trust is the
checksum S3 recorded at upload (nobody can change it afterwards), or is checked against the bytes before it is
believed. Against moto's S3 server, whose HeadObject returns the SHA-256 it recorded (full-object for a PutObject or
a copy, composite for a multipart upload), as S3 does."""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import UTC, datetime

import pytest

from dr.adapters import s3
from dr.adapters.store import S3Store, fetch, provenance_warnings
from dr.core import naming
from dr.core.errors import CorruptSnapshot, UntrustedSnapshot
from dr.core.integrity import iter_file

NAME = naming.snapshot_name(datetime(2026, 12, 6, 3, tzinfo=UTC))


def _put(s3_client, bucket, real_snapshot, **kw):
    store = S3Store(s3_client, bucket, "snapshots/")
    with open(real_snapshot, "rb") as f:
        entry = store.put(iter_file(f), NAME, metadata=s3.snapshot_metadata(
            taken_at=datetime(2026, 12, 6, 3, tzinfo=UTC), cluster="c", source="schedule"), **kw)
    return store, store.describe(entry)


def test_stored_checksum_matches_what_s3_recorded_for_one_put_and_for_a_multipart_upload(s3_client, bucket):
    for size in (1000, s3.PART_SIZE + 12345):  # one PutObject, then two parts
        data = os.urandom(size)
        w = s3.ObjectWriter(s3_client, bucket, f"k{size}", {})
        w.write(data)
        w.commit()
        recorded = s3_client.head_object(Bucket=bucket, Key=f"k{size}", ChecksumMode="ENABLED")["ChecksumSHA256"]
        good = s3.StoredChecksum()
        good.update(data)
        assert good.check(recorded) is True, size
        bad = s3.StoredChecksum()
        bad.update(data[:-1] + bytes([data[-1] ^ 1]))
        assert bad.check(recorded) is False, size
    two = s3.StoredChecksum()
    two.update(os.urandom(s3.PART_SIZE + 1))
    assert two.check("AAAA-3") is None  # a composite of 3 parts: cut otherwise than ours, cannot be told


def test_a_rewritten_sha256_tag_no_longer_refuses_a_good_snapshot(s3_client, bucket, real_snapshot, tmp_path):
    """A one-pass upload records its SHA-256 as a tag (known only at the end); a tagger rewriting it made every good
    snapshot fail with 'not the snapshot that was stored'. The S3 checksum vouches for the bytes: a warning now."""
    store, entry = _put(s3_client, bucket, real_snapshot)
    assert entry.facts_from_tags and entry.s3_checksum
    s3.set_tags(s3_client, bucket, entry.key, {s3.META_SHA256: "f" * 64})
    forged = store.describe(entry)
    warnings: list[str] = []
    digest, _ = fetch(store, forged, tmp_path / "out.db", warn=warnings.append)
    assert digest.content_sha256 == entry.sha256
    assert any("was changed after upload" in w for w in warnings), warnings


def test_metadata_fixed_at_upload_is_still_checked(s3_client, bucket, real_snapshot, tmp_path):
    """Metadata cannot change without a new version (which write-once refuses): a mismatch there is still refused."""
    key = f"snapshots/{NAME}"
    meta = s3.snapshot_metadata(taken_at=datetime.now(UTC), cluster="c", sha256="0" * 64)
    s3_client.put_object(Bucket=bucket, Key=key, Body=real_snapshot.read_bytes(), Metadata=meta,
                         ChecksumAlgorithm="SHA256")
    store = S3Store(s3_client, bucket, "snapshots/")
    with pytest.raises(CorruptSnapshot, match="recorded at upload"):
        fetch(store, store.stat(NAME), tmp_path / "out.db")


def test_bytes_that_are_not_what_s3_recorded_are_refused(s3_client, bucket, real_snapshot, tmp_path, monkeypatch):
    """The stored-bytes check: here the recorded checksum is made to disagree (S3 itself never serves other bytes
    under a recorded checksum; a proxy or a damaged copy could)."""
    store, entry = _put(s3_client, bucket, real_snapshot)
    from dataclasses import replace

    other = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    with pytest.raises(UntrustedSnapshot, match="S3 recorded at upload") as e:
        fetch(store, replace(entry, s3_checksum=other), tmp_path / "out.db")
    assert e.value.exit_code == 38
    assert not (tmp_path / "out.db").exists() and not list(tmp_path.glob("*.part"))


def test_a_planted_object_without_our_writers_marks_is_flagged(s3_client, bucket, real_snapshot, tmp_path):
    """Where the bucket policy is not enforced (moto), an object planted by someone else shows no S3 SHA-256 (our
    writers always ask for one) and no source: both are said before its bytes are used."""
    key = f"snapshots/{naming.snapshot_name(datetime.now(UTC))}"
    s3_client.put_object(Bucket=bucket, Key=key, Body=real_snapshot.read_bytes())
    store = S3Store(s3_client, bucket, "snapshots/")
    planted = store.stat(key.rsplit("/", 1)[-1])
    warnings = provenance_warnings(planted)
    assert any("S3 recorded no checksum" in w for w in warnings)
    assert any("no source metadata" in w for w in warnings)
    seen: list[str] = []
    fetch(store, planted, tmp_path / "out.db", warn=seen.append)
    assert seen == warnings
    _store, ours = _put(s3_client, bucket, real_snapshot)
    assert provenance_warnings(ours) == []


def test_a_verification_counts_only_for_the_bytes_s3_recorded(s3_client, bucket, real_snapshot):
    from dr.adapters.store import Verification

    store, entry = _put(s3_client, bucket, real_snapshot)
    store.record_verification(entry, Verification("2026-12-06T04:00:00Z", 5, 10, entry.sha256))
    tags = s3.head_snapshot(s3_client, bucket, entry.key).tags
    assert tags[s3.TAG_VERIFIED_CHECKSUM] == entry.s3_checksum
    assert store.describe(entry).verification is not None
    # a verification claimed for other stored bytes (a forged or stale verified-checksum) does not count
    s3.set_tags(s3_client, bucket, entry.key, {s3.TAG_VERIFIED_CHECKSUM: "AAAA"})
    assert store.describe(entry).verification is None
    # and a failed verification takes it all back, leaving the tier and the upload's facts
    assert sorted(store.clear_verification(entry)) == sorted(k for k in tags if k.startswith("verified-"))
    left = s3.head_snapshot(s3_client, bucket, entry.key).tags
    assert not [k for k in left if k.startswith("verified-")]
    assert left["retention"] and left[s3.META_SHA256] == entry.sha256


def test_a_write_the_vault_denies_names_snapshot_writers(s3_client, bucket, real_snapshot):
    """What S3 answers a principal outside snapshotWriters (SnapshotsOnlyByNamedWriters; moto does not evaluate the
    policy, so the 403 is injected): one line naming the setting."""
    from botocore.exceptions import ClientError

    from dr.core.errors import AccessDenied

    def denied(params, **kw):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "explicit deny"},
                           "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject")

    s3_client.meta.events.register("before-call.s3.PutObject", denied)
    with pytest.raises(AccessDenied) as e:
        _put(s3_client, bucket, real_snapshot)
    assert "snapshotWriters" in (e.value.hint or "") and e.value.exit_code == 13
