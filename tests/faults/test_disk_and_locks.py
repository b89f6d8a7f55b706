"""The disk fills (a 256 KiB tmpfs) during a snapshot and during a download; two operations start at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dr.commands import backup, restore, verify
from dr.core.errors import ExitCode
from dr.core.integrity import verify_file
from tests.faults.conftest import grow, partials, put_single_part
from tests.support.tools import run_cli

pytestmark = pytest.mark.slow  # a sandbox per test; full disks and lock races (1.2-7.8 s each)

MARKER = "/registry/configmaps/default/still-here"


def _fill(fs: Path, leave: int = 16 * 1024) -> None:
    st = os.statvfs(fs)
    (fs / "filler").write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name not in ("filler", ".dr.lock"))


def _stage(e, tmp_path) -> str:
    grow(e.sb, 2)
    snap = tmp_path / "staged.db"
    e.sb.etcdctl("snapshot", "save", str(snap))
    key = "snapshots/etcd-snapshot-20260101T000000Z.db"
    put_single_part(e.client, e.bucket, key, snap)
    return key


def test_disk_full_during_snapshot_with_upload(dr_env, tiny_fs):
    e = dr_env
    _fill(tiny_fs)
    res = run_cli(backup.main, "--save-to-s3", "--talos-dir", str(tiny_fs))
    assert res.code == ExitCode.DISK_FULL, res
    assert "no space left" in res.err
    assert _files(tiny_fs) == []  # no snapshot, no .part
    assert e.objects() == [] and e.pending() == []


def test_disk_full_during_download_for_restore(dr_env, tiny_fs, tmp_path):
    e = dr_env
    key = _stage(e, tmp_path)
    e.sb.put(MARKER, "x")
    calls = len(e.sb.calls())
    res = run_cli(restore.main, f"s3://{e.bucket}/{key}", "--yes", "--talos-dir", str(tiny_fs))
    assert res.code == ExitCode.DISK_FULL, res
    assert "no space left" in res.err and "free" in res.err
    assert _files(tiny_fs) == [] and partials(tiny_fs) == []
    assert len(e.sb.calls()) == calls and MARKER in e.sb.keys()  # the node was not touched


def test_disk_full_during_download_for_verify(dr_env, tiny_fs, tmp_path):
    e = dr_env
    key = _stage(e, tmp_path)
    res = run_cli(verify.main, f"s3://{e.bucket}/{key}", "--tmp-dir", str(tiny_fs))
    assert res.code == ExitCode.DISK_FULL, res
    assert "no space left" in res.err
    assert _files(tiny_fs) == []


# --- two at once ------------------------------------------------------------------------------------------------


def _wait_lock_held(talos_dir: Path, what: str, timeout: float = 30) -> None:
    lock = talos_dir / backup.LOCK_NAME
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lock.exists() and what in lock.read_text(errors="replace"):
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} never took {lock}")


def test_two_backups_at_once_second_is_refused(dr_env):
    e = dr_env
    e.sb.set_faults(snapshot_delay_seconds=2.0)
    first = subprocess.Popen([sys.executable, "-m", "dr.backup", "--save-to-s3"], env=e.env, cwd=e.work,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_lock_held(e.work / ".talos", "a backup")
    res = run_cli(backup.main, "--save-to-s3")
    assert res.code == ExitCode.LOCKED, res
    assert f"a backup (pid {first.pid})" in res.err and "--wait-lock" in res.err
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    [snap] = (e.work / ".talos/snapshots").glob("etcd-snapshot-*.db")
    verify_file(snap)
    assert len(e.objects()) == 1 and e.pending() == []
    assert partials(e.work) == []


def test_backup_during_a_restore_is_refused(dr_env, tmp_path):
    e = dr_env
    snap = tmp_path / "snap.db"
    e.sb.etcdctl("snapshot", "save", str(snap))
    e.sb.set_faults(reboot_seconds=2.0)
    rst = subprocess.Popen([sys.executable, "-m", "dr.restore", str(snap), "--yes", "--no-safety-snapshot",
                            "--poll-interval", "100ms"], env=e.env, cwd=e.work,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_lock_held(e.work / ".talos", "a restore")
    res = run_cli(backup.main, "--save-to-s3")
    assert res.code == ExitCode.LOCKED, res
    assert f"a restore (pid {rst.pid})" in res.err
    out, err = rst.communicate(timeout=90)
    assert rst.returncode == 0, (out, err)
    assert list((e.work / ".talos/snapshots").glob("etcd-snapshot-*.db")) == []  # the refused backup wrote nothing
    assert e.objects() == []
    assert partials(e.work) == []


def test_restore_during_a_backup_is_refused(dr_env, tmp_path):
    e = dr_env
    snap = tmp_path / "snap.db"
    e.sb.etcdctl("snapshot", "save", str(snap))
    e.sb.put(MARKER, "x")
    e.sb.set_faults(snapshot_delay_seconds=2.0)
    bk = subprocess.Popen([sys.executable, "-m", "dr.backup"], env=e.env, cwd=e.work,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_lock_held(e.work / ".talos", "a backup")
    res = run_cli(restore.main, str(snap), "--yes")
    assert res.code == ExitCode.LOCKED, res
    assert "a backup" in res.err
    assert bk.wait(60) == 0
    assert MARKER in e.sb.keys()  # nothing restored
    assert not any("reset" in c["argv"] for c in e.sb.calls())
