"""The node dies mid-snapshot, mid-reset and mid-bootstrap (the sandbox's fault switches, for real against its etcd);
the restore is killed with SIGKILL at each step and run again. Each ends with the right data or with nothing
changed, and says so with the right exit code."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dr.commands import backup, restore
from dr.core.errors import ExitCode
from dr.core.integrity import verify_file
from tests.faults.conftest import partials
from tests.support.tools import ROOT, run_cli

pytestmark = pytest.mark.slow  # a sandbox per test, faults with waits (1-9 s each)

MARKER = "/registry/configmaps/default/written-after-the-snapshot"
FAST = ["--yes", "--poll-interval", "100ms"]


@pytest.fixture
def restorable(sandbox_factory, monkeypatch, tmp_path):
    """A node-only sandbox, its env applied, cwd an empty folder; a verified snapshot of its etcd at ``snap`` and
    the keys it holds at ``expected``; then a key written after the snapshot (a restore must remove it)."""

    def make(**up):
        sb = sandbox_factory(with_s3=False, **up)
        for k, v in sb.env.items():
            monkeypatch.setenv(k, v)
        work = tmp_path / "work"
        work.mkdir()
        monkeypatch.chdir(work)
        monkeypatch.setenv("DR_TALOS_DIR", ".talos")  # the cwd's own .talos/ (the sandbox's env names its own)
        assert run_cli(backup.main).code == 0
        [local] = Path(".talos/snapshots").glob("etcd-snapshot-*.db")
        snap = tmp_path / "snap.db"
        shutil.move(local, snap)
        expected = sb.get_prefix("/registry/")
        sb.put(MARKER, "must disappear")
        env = {**sb.env, "PYTHONPATH": str(ROOT), "DR_TALOS_DIR": ".talos"}
        return sb, snap, expected, env, work

    return make


def _journal(work: Path) -> dict | None:
    try:
        return json.loads((work / ".talos" / "restore-journal.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _restored(sb, expected) -> None:
    assert sb.node_stage() == "running"
    assert sb.get_prefix("/registry/") == expected
    assert MARKER not in sb.keys()


def _clean(work: Path) -> None:
    assert partials(work) == []
    assert _journal(work) is None


# --- the node dies mid-snapshot ----------------------------------------------------------------------------------


def test_node_dies_mid_snapshot_leaves_nothing(restorable):
    sb, _, _, _, work = restorable()
    sb.set_faults(die_mid_snapshot=True)
    res = run_cli(backup.main)  # the Talos API: the connection drops mid-stream
    assert res.code == ExitCode.TRUNCATED_SNAPSHOT, res
    assert "was cut after" in res.err and "does not answer" in res.err
    assert list((work / ".talos/snapshots").iterdir()) == []  # no snapshot, no .part
    res = run_cli(backup.main, "--via-talosctl")  # talosctl reports the node's EOF
    assert res.code == ExitCode.NODE_UNREACHABLE, res
    assert "does not answer" in res.err
    assert list((work / ".talos/snapshots").iterdir()) == []


def test_node_dies_during_the_safety_snapshot_restore_goes_on(restorable):
    sb, snap, expected, _, work = restorable()
    sb.set_faults(die_mid_snapshot=True)
    res = run_cli(restore.main, str(snap), *FAST)
    assert res.code == 0, res
    assert "safety snapshot of the current etcd failed" in res.err
    _restored(sb, expected)
    _clean(work)


# --- the node dies mid-reset -------------------------------------------------------------------------------------


def test_node_never_returns_from_reset_then_resume(restorable):
    sb, snap, expected, _, work = restorable()
    sb.set_faults(never_returns=True)
    res = run_cli(restore.main, str(snap), *FAST, "--no-safety-snapshot", "--reboot-timeout", "2s")
    assert res.code == ExitCode.TIMEOUT, res
    assert "run" in res.err and "again" in res.err  # says how to continue
    j = _journal(work)
    assert j and "reset" in j["steps"]  # past the point of no return, recorded
    assert partials(work) == []
    sb.clear_faults()  # the node comes back
    res = run_cli(restore.main, str(snap), *FAST)
    assert res.code == 0, res
    assert "continuing the restore" in res.out + res.err
    _restored(sb, expected)
    _clean(work)


# --- the node dies mid-bootstrap ---------------------------------------------------------------------------------


def test_bootstrap_fails_on_the_node_then_resume(restorable):
    sb, snap, expected, _, work = restorable()
    sb.set_faults(bootstrap_fails="etcd exited unexpectedly")
    res = run_cli(restore.main, str(snap), *FAST, "--no-safety-snapshot")
    assert res.code == ExitCode.NODE_ERROR, res
    assert "etcd exited unexpectedly" in res.err
    # The node answered the bootstrap with an error: it did not start etcd from the snapshot, so the journal
    # records the reset (past the point of no return) but no bootstrap, and the re-run bootstraps again.
    steps = (_journal(work) or {}).get("steps", {})
    assert "reset" in steps and "bootstrap_started" not in steps
    sb.clear_faults()
    res = run_cli(restore.main, str(snap), *FAST)
    assert res.code == 0, res
    _restored(sb, expected)
    _clean(work)


def test_node_unreachable_for_a_while_during_bootstrap(restorable):
    sb, snap, expected, _, work = restorable(bootstrap_not_ready_seconds=1.0)

    def flap():  # once the restore is in its bootstrap retries, the node drops off the network for a second
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if "bootstrap_started" in (_journal(work) or {}).get("steps", {}):
                sb.set_faults(unreachable=True)
                time.sleep(1.0)
                sb.set_faults(unreachable=None)
                return
            time.sleep(0.02)

    th = threading.Thread(target=flap)
    th.start()
    res = run_cli(restore.main, str(snap), *FAST, "--no-safety-snapshot")
    th.join()
    assert res.code == 0, res
    assert any(c.get("error") and "connection refused" in c["error"] for c in sb.calls())
    _restored(sb, expected)
    _clean(work)


def test_node_unreachable_before_restore_changes_nothing(restorable):
    sb, snap, _, _, work = restorable()
    sb.set_faults(unreachable=True)
    res = run_cli(restore.main, str(snap), *FAST)
    assert res.code == ExitCode.NODE_UNREACHABLE, res
    sb.clear_faults()
    assert MARKER in sb.keys()  # untouched
    assert not any("reset" in c["argv"] for c in sb.calls())
    _clean(work)


# --- SIGKILL at each step, then run again --------------------------------------------------------------------------


def _spawn_restore(snap: Path, env: dict, work: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dr.restore", str(snap), *FAST, *extra], env=env, cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _kill_when(proc: subprocess.Popen, reached, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if reached():
            os.killpg(proc.pid, signal.SIGKILL)  # the whole session dies: dr.restore and its talosctl
            return
        time.sleep(0.01)
    out = proc.communicate(timeout=30)[0]
    raise AssertionError(f"the step was never reached; restore ended with {proc.returncode}:\n{out}")


def _step_done(work: Path, step: str):
    return lambda: step in ((_journal(work) or {}).get("steps") or {})


def _rerun(snap: Path, env: dict, work: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dr.restore", str(snap), *FAST, *extra], env=env, cwd=work,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "step, up, faults",
    [
        # during the safety snapshot (the journal says confirmed; the snapshot stream is slow)
        ("confirmed", {}, {"snapshot_delay_seconds": 3.0}),
        # the node accepted the reset (talosctl reset returned) and is rebooting
        ("reset-accepted", {"reboot_seconds": 2.0}, {}),
        # bootstrap --recover-from is being retried while the node says it is not ready
        ("bootstrap_started", {"bootstrap_not_ready_seconds": 2.0}, {}),
        # etcd holds the snapshot; waiting for health
        ("bootstrapped", {}, {}),
    ],
)
def test_sigkill_at_each_step_then_rerun(restorable, step, up, faults):
    sb, snap, expected, env, work = restorable(**up)
    sb.set_faults(**faults)
    proc = _spawn_restore(snap, env, work)
    if step == "reset-accepted":
        _kill_when(proc, lambda: any("reset" in c["argv"] and c.get("exit") == 0 for c in sb.calls()))
    else:
        _kill_when(proc, _step_done(work, step))
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    sb.clear_faults()
    rerun = _rerun(snap, env, work)
    assert rerun.returncode == 0, (rerun.stdout, rerun.stderr)
    _restored(sb, expected)
    _clean(work)
    verify_file(snap)  # the source snapshot is untouched


def test_sigkill_between_recording_the_reset_and_sending_it(restorable):
    sb, snap, expected, env, work = restorable()
    proc = _spawn_restore(snap, env, work, "--no-safety-snapshot")
    # talosctl is a new interpreter: it needs far more than the 10 ms this takes to reach the node.
    _kill_when(proc, _step_done(work, "reset"))
    proc.communicate(timeout=30)
    assert not any("reset" in c["argv"] for c in sb.calls()), "the reset reached the node before the kill"
    assert MARKER in sb.keys()
    rerun = _rerun(snap, env, work, "--reboot-timeout", "3s")
    assert rerun.returncode == 0, (rerun.stdout, rerun.stderr)
    _restored(sb, expected)
