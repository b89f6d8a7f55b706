"""`talos-dr restore` on the three-node sandbox (three real etcd members, Talos v1.13.9's join loop and wait for a
bootstrap: sandbox/membership.py, CONFORMANCE rows "multi-node: ..."): two of three lost and restored to three
voting members with every key; interrupted at the worst moments and resumed into one cluster; one node lost is
refused (quorum intact) without touching anything."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from dr.adapters import journal_file
from dr.commands import backup, restore
from dr.commands.restore import ha as ha_cmd
from dr.core import journal
from dr.core.errors import ExitCode
from sandbox import etcd
from sandbox.api import Sandbox
from sandbox.testing import require_etcd
from tests.support.tools import run_cli

pytestmark = pytest.mark.slow  # a three-node sandbox per test, full restores

A = "/registry/configmaps/default/before-backup"
B = "/registry/configmaps/default/after-backup"
FAST = ("--poll-interval", "0.2", "--reboot-timeout", "60s", "--bootstrap-timeout", "60s", "--health-timeout", "60s",
        "--join-timeout", "60s", "--preparing-long", "1")


@pytest.fixture
def three(tmp_path, monkeypatch) -> Iterator[Sandbox]:
    require_etcd()
    sb = Sandbox.up(tmp_path / "sb", nodes=3, reboot_seconds=0.3, bootstrap_not_ready_seconds=0.2)
    try:
        for k, v in sb.env.items():
            monkeypatch.setenv(k, v)
        work = tmp_path / "work"
        work.mkdir()
        monkeypatch.chdir(work)
        monkeypatch.setenv("DR_TALOS_DIR", ".talos")
        yield sb
    finally:
        sb.down()


def run_restore(*argv: str):
    return run_cli(restore.main, *argv, *FAST, stdin=io.StringIO(""))


def backup_a_then_write_b(sb: Sandbox) -> set[str]:
    """A in etcd, a snapshot of it in S3, then B written after it; returns every key the snapshot holds."""
    sb.put(A, "a")
    res = run_cli(backup.main, "--save-to-s3")
    assert res.code == 0, res
    keys = set(sb.keys("/"))
    sb.put(B, "b")
    return keys


def lose_two_disks(sb: Sandbox) -> None:
    """Nodes 2 and 3 terminated with their disks; `pulumi up --refresh` replaced them: empty etcd, no quorum to join
    (node 1's member has no leader), so they wait for a bootstrap."""
    for i in (2, 3):
        sb.lose(i, disk=True)
        sb.replace_instance(i)


def bootstraps(sb: Sandbox) -> list[list[str]]:
    return [c["argv"] for c in sb.calls() if "bootstrap" in c["argv"]]


def one_cluster(sb: Sandbox) -> list[dict]:
    """Three voting members, and each member reports the same member ids and the same cluster id."""
    members = sb.wait_voters(3, timeout=60)
    ids = {m["id"] for m in members}
    assert len(ids) == 3 and not any(m["is_learner"] for m in members)
    seen_ids, clusters = [], set()
    for node in sb.nodes():
        listed = etcd.member_list(node.info.etcd_endpoint, require_leader=False)
        seen_ids.append({f"{m['id']:016x}" for m in listed})
        clusters.add(etcd._call(node.info.etcd_endpoint, "maintenance/status", {})["header"]["cluster_id"])
    assert seen_ids == [ids, ids, ids]
    assert len(clusters) == 1
    return members


def assert_restored(sb: Sandbox, snapshot_keys: set[str]) -> None:
    one_cluster(sb)
    for node in sb.nodes():  # every member holds every key of the snapshot, and not what came after it
        data = etcd.get_prefix(node.info.etcd_endpoint, "/")
        assert snapshot_keys <= set(data), node
        assert data[A] == b"a" and B not in data
    assert not journal.path_for(Path.cwd() / ".talos").exists()


def test_two_of_three_lost_restore_latest_three_voting_members_every_key(three):
    sb = three
    snapshot_keys = backup_a_then_write_b(sb)
    lose_two_disks(sb)
    res = run_restore("latest", "--yes")
    assert res.code == 0, res
    assert_restored(sb, snapshot_keys)
    done = [a for a in bootstraps(sb)]
    assert len(done) == 1 and "127.0.0.2" in done[0]  # exactly one bootstrap, on the bootstrap node
    assert "quorum    LOST" in res.out and "bootstrap node: talos-sandbox-cp (127.0.0.2)" in res.out
    assert res.out.count("joined: a voting member") == 2 and "restore complete" in res.out
    kube = Path.cwd() / ".talos" / "kubeconfig"
    assert kube.is_file() and kube.stat().st_mode & 0o777 == 0o600


def _interrupt_after_mark(monkeypatch, step: str):
    real = journal_file.mark

    def mark(path, j, s):
        real(path, j, s)
        if s == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(journal_file, "mark", mark)
    return lambda: monkeypatch.setattr(journal_file, "mark", real)


def _interrupt_after_bootstrap_call(monkeypatch):
    real = ha_cmd.HaRestore.bootstrap_target

    def then_ctrl_c(self, step):
        real(self, step)
        raise KeyboardInterrupt

    monkeypatch.setattr(ha_cmd.HaRestore, "bootstrap_target", then_ctrl_c)
    return lambda: monkeypatch.setattr(ha_cmd.HaRestore, "bootstrap_target", real)


@pytest.mark.parametrize("moment", ["target recorded", "before the bootstrap call", "after the bootstrap call"])
def test_interrupted_at_the_worst_moment_resumes_into_one_cluster(three, monkeypatch, moment):
    sb = three
    snapshot_keys = backup_a_then_write_b(sb)
    lose_two_disks(sb)
    undo = (_interrupt_after_bootstrap_call(monkeypatch) if moment == "after the bootstrap call" else
            _interrupt_after_mark(monkeypatch, journal.BOOTSTRAP_TARGET if moment == "target recorded"
                                  else journal.BOOTSTRAP_STARTED))
    res = run_restore("latest", "--yes")
    assert res.code == ExitCode.INTERRUPTED, res
    j = journal_file.load(journal.path_for(Path.cwd() / ".talos"))
    assert j is not None and j.bootstrap_target == "127.0.0.2"
    assert "again to continue" in res.err
    sent = len(bootstraps(sb))
    assert sent == (1 if moment == "after the bootstrap call" else 0)
    undo()
    again = run_restore(j.spec, "--yes")  # the resume command it printed names the resolved snapshot
    assert again.code == 0, again
    assert_restored(sb, snapshot_keys)
    ok = [c["argv"] for c in sb.calls() if "bootstrap" in c["argv"] and c["exit"] == 0]
    assert len(ok) == 1 and "127.0.0.2" in ok[0], bootstraps(sb)  # one bootstrap accepted, on the recorded node
    assert all("127.0.0.2" in argv for argv in bootstraps(sb))  # never sent to another node


def test_one_node_lost_is_refused_quorum_intact_names_replace_member(three):
    sb = three
    backup_a_then_write_b(sb)
    sb.lose(3)
    res = run_restore("latest", "--yes")
    assert res.code == ExitCode.QUORUM_INTACT == 29, res
    assert "quorum is intact" in res.err and "talos-dr replace-member talos-sandbox-cp-3" in res.err
    assert "nothing was changed" in res.err
    assert not [c for c in sb.calls() if "reset" in c["argv"] or "bootstrap" in c["argv"]]
    data = sb.get_prefix("/registry/configmaps/default/")
    assert data.get(A) == "a" and data.get(B) == "b"  # the current data, untouched
    assert not journal.path_for(Path.cwd() / ".talos").exists()
