"""dr.commands.verify.prove's pure parts: the recorded-cluster check, and a data-dir copy told from a snapshot."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from dr.adapters.store import Entry
from dr.commands import verify
from dr.commands.source import Fetched
from dr.core import naming
from dr.core.errors import ConfigError, ExitCode, NotASnapshot, VerifyMismatch
from dr.core.integrity import SnapshotDigest
from tests.support.snapshots import synthetic_snapshot

NAME = "etcd-snapshot-20261206T000000Z.db.zst"


def _fetched(cluster: str | None) -> Fetched:
    parsed = naming.parse(NAME)
    assert parsed is not None
    e = Entry("s3", parsed, f"s3://b/snapshots/{NAME}", 10, datetime(2026, 12, 6, tzinfo=UTC), cluster=cluster)
    return Fetched(Path("x.db"), e.location, SnapshotDigest(10, "a" * 64, "b" * 64), entry=e)


@pytest.mark.parametrize("recorded, stack, refused", [
    ("prod", "prod", False), ("staging", "prod", True), (None, "prod", False), ("unknown", "prod", False),
    ("staging", None, False), ("staging", "unknown", False),
])
def test_a_snapshot_recorded_for_another_cluster_is_refused(recorded, stack, refused):
    report = verify.Report(source="x")
    if refused:
        with pytest.raises(VerifyMismatch) as info:
            verify.check_cluster(_fetched(recorded), stack, report)
        assert info.value.exit_code == ExitCode.VERIFY_MISMATCH and recorded in info.value.message
    else:
        verify.check_cluster(_fetched(recorded), stack, report)


def test_a_data_dir_copy_is_a_bbolt_file_without_a_trailer(tmp_path):
    snap = tmp_path / "s.db"
    snap.write_bytes(synthetic_snapshot(4))
    with pytest.raises(ConfigError):  # size % 512 == 32: a snapshot, not a copy
        verify.fetch_data_dir_copy(str(snap))
    raw = tmp_path / "db"
    raw.write_bytes(synthetic_snapshot(4)[:-32])
    f = verify.fetch_data_dir_copy(str(raw))
    assert f.digest.size == raw.stat().st_size
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 8192)
    with pytest.raises(NotASnapshot):
        verify.fetch_data_dir_copy(str(junk))
