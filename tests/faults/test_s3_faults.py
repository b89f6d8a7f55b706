"""The S3 server dies, errs or crawls, for real: a dedicated moto server per test, killed with SIGKILL, or a fault
proxy in front of it answering 500 or answering late."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dr.adapters import s3
from dr.commands import backup, restore, verify
from dr.core.errors import ExitCode
from dr.core.integrity import verify_file
from tests.faults.conftest import MIB, grow, partials, put_single_part
from tests.support.tools import run_cli

pytestmark = pytest.mark.slow  # a sandbox and an S3 fault proxy per test (2.5-9 s each)


def _local_snapshots() -> list[Path]:
    d = Path(".talos/snapshots")
    return sorted(d.glob("etcd-snapshot-*.db")) if d.exists() else []


def _one_line_error(res) -> None:
    lines = [ln for ln in res.err.splitlines() if "error" in ln]
    assert len(lines) == 1, res.err


def _resets(sb) -> list:
    return [c for c in sb.calls() if c["argv"][:1] == ["reset"] or "reset" in c["argv"]]


def _stage_snapshot(e, tmp_path) -> tuple[str, Path]:
    """A verified snapshot of the node (about 3 MiB), stored single-part in the bucket; returns its key and a copy."""
    grow(e.sb, 3)
    assert run_cli(backup.main).code == 0
    [local] = _local_snapshots()
    copy = tmp_path / local.name
    copy.write_bytes(local.read_bytes())
    local.unlink()
    key = f"snapshots/{local.name}"
    put_single_part(e.client, e.bucket, key, copy)
    return key, copy


def test_server_killed_mid_upload(dr_env):
    e = dr_env
    grow(e.sb, 12)  # about 19 MiB: a multipart upload of 3 parts
    killed = []

    def kill_on_second_part(method, path):
        if method == "PUT" and "partNumber=2" in path and not killed:
            killed.append(path)
            e.moto.kill()

    e.proxy.on_request = kill_on_second_part
    res = run_cli(backup.main, "--save-to-s3")
    assert killed, "the upload never reached its second part"
    assert res.code == ExitCode.S3_ERROR, res
    assert f"upload to s3://{e.bucket}/snapshots/" in res.err and "retry" in res.err
    _one_line_error(res)
    # Nothing lost: the node's stream was read to its end and verified into the local snapshot, which stays (with
    # --via-talosctl it was verified before the upload). Nothing partial: no .part, and the
    # multipart upload was never completed (its abort was attempted; the bucket's lifecycle rule removes what a dead
    # server kept).
    [local] = _local_snapshots()
    verify_file(local)
    assert partials(e.work) == []
    assert not any(m == "POST" and "uploadId=" in p and st == 200 for m, p, st in e.proxy.requests())
    assert any(m == "DELETE" and "uploadId=" in p for m, p, _ in e.proxy.requests())


def test_server_killed_mid_download_restore_touches_nothing(dr_env, tmp_path):
    e = dr_env
    key, _ = _stage_snapshot(e, tmp_path)
    e.proxy.cut_get_after = 1 * MIB
    e.proxy.on_cut = e.moto.kill
    calls_before = len(e.sb.calls())
    res = run_cli(restore.main, f"s3://{e.bucket}/{key}", "--yes", "--no-safety-snapshot")
    assert res.code == ExitCode.S3_ERROR, res
    assert f"s3://{e.bucket}/{key}" in res.err
    _one_line_error(res)
    assert partials(e.work) == [] and _local_snapshots() == []
    assert not Path(".talos/restore-journal.json").exists()
    assert _resets(e.sb) == [] and len(e.sb.calls()) == calls_before  # the node was never contacted
    assert e.sb.node_stage() == "running"


def test_server_killed_mid_download_verify(dr_env, tmp_path):
    e = dr_env
    key, _ = _stage_snapshot(e, tmp_path)
    e.proxy.cut_get_after = 1 * MIB
    e.proxy.on_cut = e.moto.kill
    tmp = tmp_path / "verify-tmp"
    res = run_cli(verify.main, f"s3://{e.bucket}/{key}", "--tmp-dir", str(tmp))
    assert res.code == ExitCode.S3_ERROR, res
    _one_line_error(res)
    assert partials(tmp) == []
    assert [p for p in tmp.rglob("*") if p.is_file()] == []


def test_500s_that_clear_within_the_retries(dr_env):
    e = dr_env
    e.proxy.fail("PUT", times=3)  # a snapshot under 8 MiB is one PUT: 3 failures, then the 4th attempt passes
    res = run_cli(backup.main, "--save-to-s3", "--no-compress")  # plain, so the object is byte for byte the file
    assert res.code == 0, res
    # The object's PUTs; then come its tags (known once the stream ended) and the copy to <prefix>latest.
    puts = [st for m, p, st in e.proxy.requests("PUT") if "tagging" not in p and not p.split("?")[0].endswith("/latest")]
    assert puts == [500, 500, 500, 200]
    [local] = _local_snapshots()
    [key] = e.objects()
    assert e.client.get_object(Bucket=e.bucket, Key=key)["Body"].read() == local.read_bytes()
    assert e.pending() == []


def test_500s_that_persist_fail_clearly_after_bounded_retries(dr_env):
    e = dr_env
    e.proxy.fail("PUT", times=1000)
    start = time.monotonic()
    res = run_cli(backup.main, "--save-to-s3")
    elapsed = time.monotonic() - start
    assert res.code == ExitCode.S3_ERROR, res
    assert "InternalError" in res.err or "500" in res.err, res.err
    assert "retry" in res.err
    _one_line_error(res)
    # botocore's max_attempts=5 counts retries: 1 try + 5 retries with backoff and jitter, then it gives up.
    assert len(e.proxy.requests("PUT")) == 6
    assert elapsed < 60
    assert e.objects() == [] and e.pending() == []
    [local] = _local_snapshots()
    verify_file(local)
    assert partials(e.work) == []


def test_slow_responses_within_the_timeout_succeed(dr_env, tmp_path):
    e = dr_env
    key, copy = _stage_snapshot(e, tmp_path)
    e.proxy.delay("HEAD", seconds=1.0, times=1)
    e.proxy.fail("GET", times=1)  # the download's first answer is a 500 (retried) ...
    e.proxy.delay("GET", seconds=1.5, times=1)  # ... its second comes late, but within the read timeout
    tmp = tmp_path / "verify-tmp"
    start = time.monotonic()
    res = run_cli(verify.main, f"s3://{e.bucket}/{key}", "--tmp-dir", str(tmp))
    assert res.code == 0, res
    assert time.monotonic() - start > 2.5
    assert [st for _, _, st in e.proxy.requests("GET")][:2] == [500, 200]  # then the tagging GET
    assert partials(tmp) == []


def test_multipart_snapshot_from_dr_backup_downloads(dr_env, tmp_path):
    e = dr_env
    grow(e.sb, 10)  # over 8 MiB: dr.backup uploads it in parts
    assert run_cli(backup.main, "--save-to-s3").code == 0
    [key] = e.objects()
    info = e.client.head_object(Bucket=e.bucket, Key=key, ChecksumMode="ENABLED")
    assert info["ContentLength"] > s3.PART_SIZE
    res = run_cli(verify.main, f"s3://{e.bucket}/{key}", "--tmp-dir", str(tmp_path / "v"))
    assert res.code == 0, res
