"""Concurrent talosctl calls, interrupted snapshots, and fault-file validation."""

from __future__ import annotations

import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from dr.core.integrity import verify_file
from sandbox import faults
from tests.sandbox.test_node import fails, ok

pytestmark = pytest.mark.slow  # the module's sandbox (~1 s), slow streams, a second sandbox


def test_parallel_snapshots_and_reads_all_succeed(shared, tmp_path):
    def snap(i):
        return shared.talosctl_run("etcd", "snapshot", str(tmp_path / f"s{i}.db"))

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(snap, range(3))) + [pool.submit(shared.talosctl_run, "version").result()]
    for r in results:
        ok(r)
    for i in range(3):
        verify_file(tmp_path / f"s{i}.db")
    assert shared.node_stage() == "running"


def test_sigterm_during_a_slow_snapshot_leaves_no_part_file(shared, tmp_path):
    shared.set_faults(snapshot_delay_seconds=5)
    dest = tmp_path / "slow.db"
    p = subprocess.Popen([str(shared.talosctl), "etcd", "snapshot", str(dest)], env=shared.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 5
    while not (tmp_path / "slow.db.part").exists():
        assert time.monotonic() < deadline and p.poll() is None, "the .part file never appeared"
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=5) != 0
    assert not dest.exists() and not (tmp_path / "slow.db.part").exists()
    leftovers = list((shared.dir / "node" / "tmp").glob("*.db"))
    assert leftovers == []


def test_throttle_slows_the_stream(shared, tmp_path):
    shared.set_faults(snapshot_throttle_bytes_per_second=100_000)
    t0 = time.monotonic()
    r = ok(shared.talosctl_run("etcd", "snapshot", str(tmp_path / "t.db")))
    size = (tmp_path / "t.db").stat().st_size
    assert time.monotonic() - t0 >= size / 100_000 * 0.8, r.stdout


def test_bootstrap_fails_fault_and_fault_validation(sandbox_factory, tmp_path):
    sb = sandbox_factory("bf", with_s3=False, reboot_seconds=0.2, bootstrap_not_ready_seconds=0)
    snap = tmp_path / "s.db"
    ok(sb.talosctl_run("etcd", "snapshot", str(snap)))
    ok(sb.talosctl_run("reset", "--graceful=false", "--reboot", "--system-labels-to-wipe=EPHEMERAL"))
    sb.set_faults(bootstrap_fails="etcd refused to start (injected)")
    fails(sb.talosctl_run("bootstrap", f"--recover-from={snap}"), "code = Internal", "injected")
    assert not sb.status()["etcd"]["alive"]
    sb.clear_faults()
    ok(sb.talosctl_run("bootstrap", f"--recover-from={snap}"))
    deadline = time.monotonic() + 20  # the node starts etcd after the call returned
    while not sb.node_view().etcd_running:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert len(sb.keys()) == len(sb.seed_data())

    with pytest.raises(ValueError, match="unknown fault"):
        sb.set_faults(no_such_fault=True)
    with pytest.raises(ValueError, match="must be"):
        faults.validate({"snapshot_truncate_bytes": "ten"})
