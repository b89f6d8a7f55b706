"""The four docs/RUNBOOK.md scenarios, as a person would run them, on the two-address sandbox (the node's private IP
127.0.0.2, its Elastic IP 127.0.0.3). Scenario 2 (etcd corrupt on a running node) is
test_restore.py::test_runbook_etcd_corrupt_node_running_restores."""

from __future__ import annotations

import shutil
import time

import pytest

from dr.core.errors import ExitCode
from tests.commands.restore.test_restore import (
    A,
    B,
    assert_restored,
    backup_a_then_write_b,
    resets,
    run_restore,
    talos_dir,
)

pytestmark = pytest.mark.slow


def fresh_node_from_pulumi_up(sb) -> None:
    """What `pulumi up --refresh` leaves after the node and its root volume were lost: a new node, configured, whose
    etcd Pulumi's Bootstrap started empty (no restore)."""
    assert sb.talosctl_run("reset", "--graceful=false", "--reboot", "--system-labels-to-wipe=EPHEMERAL",
                           "--wait=false").returncode == 0
    deadline = time.monotonic() + 30
    while sb.talosctl_run("bootstrap").returncode != 0:
        assert time.monotonic() < deadline, "the rebuilt node never took its bootstrap"
        time.sleep(0.1)
    while not sb.node_view().etcd_running:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert A not in sb.get_prefix("/registry/configmaps/default/")


def test_scenario_1_node_lost_then_rebuilt(sandbox_env):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    fresh_node_from_pulumi_up(sb)
    shutil.rmtree(talos_dir() / "snapshots")  # the laptop's copies are not what this scenario relies on
    res = run_restore("latest", "--yes")
    assert_restored(sb, res)
    # The rebuilt node's etcd ran (empty but running): it was reset like any other, after the question.
    assert len(resets(sb)) == 2 and "About to restore" in res.out


def test_scenario_3_total_loss_restore_by_uri(sandbox_env, monkeypatch):
    sb = sandbox_env
    local = backup_a_then_write_b(sb)
    fresh_node_from_pulumi_up(sb)
    shutil.rmtree(talos_dir())  # nothing of the old laptop's state survives
    monkeypatch.delenv("TALOSCONFIG")  # the talosconfig comes back from the stack's outputs
    res = run_restore(f"s3://{sb.bucket}/snapshots/{local.name}", "--yes")
    assert_restored(sb, res)
    assert (talos_dir() / "talosconfig").stat().st_mode & 0o777 == 0o600


def test_scenario_4_talos_dir_deleted(sandbox_env, monkeypatch):
    sb = sandbox_env
    backup_a_then_write_b(sb)
    shutil.rmtree(talos_dir())
    monkeypatch.delenv("TALOSCONFIG")
    res = run_restore("latest", "--yes")
    assert_restored(sb, res)
    data = sb.get_prefix("/registry/configmaps/default/")
    assert data.get(A) == "a" and B not in data


def test_a_talosconfig_that_names_the_elastic_ip_as_node_is_a_settings_error(sandbox_env):
    """The first round's talosconfig (nodes = endpoints = the EIP): apid forwards the call to its own Elastic IP and
    cannot reach it. The restore says what to fix, and touches nothing."""
    sb = sandbox_env
    backup_a_then_write_b(sb)
    res = run_restore("latest", "--yes", "--node", sb.public_ip)
    assert res.code == ExitCode.CONFIG, res
    assert "private IP" in res.err and "nothing was changed" in res.err
    assert resets(sb) == []


def replaced_by_pulumi_up(sb, private_ip: str = "127.0.0.12") -> None:
    """What `pulumi up --refresh` leaves when the instance is gone and its private IP was not pinned: a new instance
    with another private IP and hostname, configured, whose empty etcd Pulumi's Bootstrap started."""
    sb.replace_instance(private_ip)
    sb.wait_stage("booting", timeout=30)  # back up, etcd waiting for its bootstrap
    deadline = time.monotonic() + 30
    while sb.talosctl_run("bootstrap").returncode != 0:
        assert time.monotonic() < deadline, "the new instance never took its bootstrap"
        time.sleep(0.1)
    while not sb.node_view().etcd_running:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert A not in sb.get_prefix("/registry/configmaps/default/")


def test_scenario_1_on_a_replaced_instance_with_a_new_private_ip(sandbox_env, monkeypatch):
    """The node died and `pulumi up --refresh` made a new instance that EC2 gave another private IP (a stack from
    before nodePrivateIp): the restored etcd holds the old machine's Node, which the restore removes before the
    health wait; without that, `talosctl health` refuses it for ever (talos-fidelity F1)."""
    from dr.commands.restore import steps
    from sandbox import kube

    monkeypatch.setattr(steps, "STALE_LEASE_WAIT", 0.3)
    sb = sandbox_env
    backup_a_then_write_b(sb)
    replaced_by_pulumi_up(sb)
    shutil.rmtree(talos_dir() / "snapshots")
    res = run_restore("latest", "--yes")
    assert_restored(sb, res)
    assert "removed Kubernetes Node talos-sandbox-cp (InternalIP 127.0.0.2)" in res.out
    assert [n["metadata"]["name"] for n in kube.list_nodes(sb.etcd_endpoint)] == ["ip-127-0-0-12"]
    assert sb.talosctl_run("health", "--wait-timeout", "5s", "--control-plane-nodes", "127.0.0.12").returncode == 0


def test_scenario_1_on_a_replaced_instance_without_the_removal_never_gets_healthy(sandbox_env, monkeypatch):
    """The finding itself: with the stale Node left in place, `talosctl health` refuses the cluster and the restore
    can only time out (and would again on every re-run)."""
    from dr.commands.restore import steps

    monkeypatch.setattr(steps, "remove_stale_nodes", lambda *a, **k: [])
    sb = sandbox_env
    backup_a_then_write_b(sb)
    replaced_by_pulumi_up(sb)
    res = run_restore("latest", "--yes", "--health-timeout", "3s")
    assert res.code == ExitCode.TIMEOUT, res
    assert "did not become healthy" in res.err
    r = sb.talosctl_run("health", "--wait-timeout", "1s", "--control-plane-nodes", "127.0.0.12")
    assert 'unexpected nodes with IPs ["127.0.0.2"]' in r.stderr
