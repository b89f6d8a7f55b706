"""A raw member/snap/db (talos-fidelity F10): the last copy when the bucket is gone is etcd's database file out of a
volume snapshot. It has no hash trailer; the node's etcdutl refuses it unless told --recover-skip-hash-check
("snapshot missing hash but --skip-hash-check=false", etcd v3.6.12 etcdutl/snapshot/v3_snapshot.go copyAndVerifyDB),
which `talos-dr restore --from-data-dir-copy` passes after the bbolt check and the throwaway-etcd proof."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from dr.adapters import etcdlocal
from dr.commands import restore, verify
from dr.core.errors import ExitCode
from tests.sandbox.test_node import ok
from tests.sandbox.test_talos_model import etcd, settle_after_reset, wait_for
from tests.support.tools import run_cli

pytestmark = pytest.mark.slow

A = "/registry/configmaps/default/in-the-copy"
B = "/registry/configmaps/default/after-the-copy"
FAST = ("--poll-interval", "0.1", "--reboot-timeout", "30s", "--bootstrap-timeout", "30s", "--health-timeout", "20s")


def _data_dir_copy(sb, tmp_path: Path) -> Path:
    """member/snap/db of a data directory holding A (made by etcd's own restore of a snapshot of the node)."""
    snap = tmp_path / "snap.db"
    sb.etcdctl("snapshot", "save", str(snap))
    data = tmp_path / "datadir"
    etcdlocal.restore_snapshot(snap, data, "copy", "http://127.0.0.1:1")
    raw = tmp_path / "db"
    shutil.copy(data / "member" / "snap" / "db", raw)
    assert raw.stat().st_size % 512 == 0  # no trailer: a database file is whole pages
    return raw


@pytest.fixture
def node_env(sandbox_workdir):
    return sandbox_workdir


def test_restore_from_a_data_dir_copy(node_env, tmp_path):
    sb = node_env
    sb.put(A, "a")
    raw = _data_dir_copy(sb, tmp_path)
    sb.put(B, "b")
    # verify proves it the same way (one proof), and refuses it without the flag as restore does.
    v = run_cli(verify.main, str(raw), verify.DATA_DIR_FLAG, "--tmp-dir", str(tmp_path / "v"))
    assert v.code == 0, v
    assert "NO hash trailer" in v.out
    assert run_cli(verify.main, str(raw), "--tmp-dir", str(tmp_path / "v")).code == ExitCode.TRUNCATED_SNAPSHOT
    calls = len(sb.calls())
    # Without the flag it is what it looks like: a file without a snapshot's trailer, refused before the node.
    res = run_cli(restore.main, str(raw), "--yes", *FAST, stdin=io.StringIO(""))
    assert res.code == ExitCode.TRUNCATED_SNAPSHOT, res
    assert not any("reset" in c["argv"] for c in sb.calls()[calls:])
    # With it: the prompt spells out what that means, and the node is told to skip the hash it cannot have.
    res = run_cli(restore.main, str(raw), verify.DATA_DIR_FLAG, *FAST, stdin=io.StringIO(""))
    assert res.code == ExitCode.NOT_CONFIRMED, res
    assert "FROM A DATA-DIR COPY" in res.out and "--recover-skip-hash-check" in res.out and "WAL" in res.out
    res = run_cli(restore.main, str(raw), verify.DATA_DIR_FLAG, "--yes", *FAST, stdin=io.StringIO(""))
    assert res.code == 0, res
    boots = [c["argv"] for c in sb.calls() if "bootstrap" in c["argv"]]
    assert boots and "--recover-skip-hash-check" in boots[-1], boots
    keys = sb.keys()
    assert A in keys and B not in keys


def test_a_snapshot_with_a_trailer_is_not_a_data_dir_copy(node_env, tmp_path):
    snap = tmp_path / "etcd-snapshot-20261206T000000Z.db"
    node_env.put(A, "a")
    node_env.etcdctl("snapshot", "save", str(snap))
    res = run_cli(restore.main, str(snap), verify.DATA_DIR_FLAG, "--yes", *FAST, stdin=io.StringIO(""))
    assert res.code == ExitCode.CONFIG, res
    assert "without --from-data-dir-copy" in res.err


def test_the_node_refuses_a_hashless_file_without_skip_hash_check(sandbox_factory, tmp_path):
    """The sandbox models etcdutl v3.6.12's copyAndVerifyDB: no hash (size % 512 != 32) and no --skip-hash-check is a
    pre-start failure with etcd's own words; with --recover-skip-hash-check the same file starts etcd."""
    node = sandbox_factory(with_s3=False)
    node.put(A, "a")
    raw = _data_dir_copy(node, tmp_path)
    reset = ("reset", "--graceful=false", "--reboot", "--system-labels-to-wipe=EPHEMERAL", "--wait=false")
    ok(node.talosctl_run(*reset))
    settle_after_reset(node)
    wait_for(lambda: node.talosctl_run("bootstrap", f"--recover-from={raw}").returncode == 0)
    wait_for(lambda: etcd(node).state == "Failed")
    assert etcd(node).last_message == ("Failed to run pre stage: error recovering from the snapshot: snapshot missing "
                                       "hash but --skip-hash-check=false")
    ok(node.talosctl_run(*reset))
    settle_after_reset(node)
    wait_for(lambda: node.talosctl_run("bootstrap", f"--recover-from={raw}",
                                       "--recover-skip-hash-check").returncode == 0)
    wait_for(lambda: etcd(node).state == "Running")
    assert A in node.keys()
