"""Membership changes on the three-node sandbox, as Talos v1.13.9 makes them: a node wiped while the others keep quorum
rejoins (its old member removed, learner, promoted), `etcd remove-member` / `etcd leave`, the graceful reset's leave
step, `health` across the nodes, `break node --node N`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from sandbox import etcd, procs
from sandbox.api import Sandbox
from sandbox.testing import require_etcd


@pytest.fixture
def three(tmp_path) -> Iterator[Sandbox]:
    require_etcd()
    sb = Sandbox.up(tmp_path / "sb", nodes=3, with_s3=False, reboot_seconds=0.3, bootstrap_not_ready_seconds=0.2)
    yield sb
    sb.down()


def _ids(sb: Sandbox) -> dict[str, str]:
    return {m["name"]: m["id"] for m in sb.etcd_members()}


def test_a_node_wiped_with_quorum_rejoins_as_a_new_member(three):
    before = _ids(three)
    r = three.talosctl_on(3, "reset", "--graceful=false", "--reboot", "--system-labels-to-wipe", "EPHEMERAL",
                          "--wait=false")
    assert r.returncode == 0, r.stderr
    after = {m["name"]: m["id"] for m in three.wait_voters(3, timeout=40)}
    assert after["talos-sandbox-cp-3"] != before["talos-sandbox-cp-3"]
    assert after["talos-sandbox-cp"] == before["talos-sandbox-cp"]
    log = (three.dir / "logs/machined-3.log").read_text()
    assert "etcd joins the cluster as learner" in log and "successfully promoted etcd member" in log


def test_remove_member_and_leave(three):
    ids = _ids(three)
    r = three.talosctl_on(1, "etcd", "remove-member", "00000000000000ff")
    assert r.returncode == 1 and "code = NotFound desc = failed to remove member 255: etcdserver: member not found" \
        in r.stderr
    r = three.talosctl_on(1, "etcd", "remove-member", "not-hex")
    assert r.returncode == 1 and 'error parsing member ID: strconv.ParseUint: parsing "not-hex"' in r.stderr
    # etcd refuses a reconfiguration until every member has been connected for 5 s (HealthInterval, etcd v3.6.12
    # server/etcdserver/server.go:92-94,1632-1652): right after the cluster formed, "unhealthy cluster".
    def removed() -> bool:
        r = three.talosctl_on(1, "etcd", "remove-member", ids["talos-sandbox-cp-3"])
        assert r.returncode == 0 or "etcdserver: unhealthy cluster" in r.stderr, r.stderr
        return r.returncode == 0

    assert procs.wait_for(removed, 15, interval=0.5)
    assert set(_ids(three)) == {"talos-sandbox-cp", "talos-sandbox-cp-2"}
    r = three.talosctl_on(2, "etcd", "leave")
    assert r.returncode == 0, r.stderr
    assert set(_ids(three)) == {"talos-sandbox-cp"}
    node2 = three.node_at(2)
    assert not (node2.paths.etcd_data).exists()  # LeaveCluster deletes the data of the removed member
    three.settle()
    # The etcd service stays stopped until the next boot: no join while it is Finished.
    assert node2.snapshot_state().etcd_state == "Finished"
    assert set(_ids(three)) == {"talos-sandbox-cp"}


def test_graceful_reset_leaves_etcd_first_with_quorum_and_fails_without(three):
    before = _ids(three)
    r = three.talosctl_on(3, "reset", "--reboot", "--system-labels-to-wipe", "EPHEMERAL", "--wait=false")
    assert r.returncode == 0, r.stderr
    # The leave step removed the member before anything was wiped (v1alpha1_sequencer_tasks.go LeaveEtcd).
    assert before["talos-sandbox-cp-3"] not in _ids(three).values()
    after = {m["name"]: m["id"] for m in three.wait_voters(3, timeout=40)}
    assert after["talos-sandbox-cp-3"] != before["talos-sandbox-cp-3"]
    three.lose(1)
    three.lose(2)
    node3 = three.node_at(3)
    assert procs.wait_for(lambda: etcd.status(node3.info.etcd_endpoint)["leader"] == 0, 10)
    r = three.talosctl_on(3, "reset", "--reboot", "--system-labels-to-wipe", "EPHEMERAL", "--wait=false")
    assert r.returncode == 0, r.stderr  # the RPC returns; the sequence fails on the node
    st = three.node_at(3).snapshot_state()
    assert st.etcd_running and (node3.paths.etcd_data / "member").exists()
    with node3.locked() as raw:
        assert "no leader" in raw.resets[-1]["failed"]


def test_health_across_nodes_and_break_a_node_by_hand(three):
    r = three.talosctl_on(1, "health", "--wait-timeout", "20s")
    assert r.returncode == 0, r.stderr
    assert '"127.0.0.2", "127.0.0.4", "127.0.0.6"' in r.stderr
    cli = [sys.executable, "-m", "sandbox"]
    out = subprocess.run([*cli, "break", "node", "--node", "2", "--dir", str(three.dir)], capture_output=True,
                         text=True, check=True).stdout
    assert "node 2" in out
    r = three.talosctl_on(1, "health", "--wait-timeout", "1s")
    assert r.returncode == 1
    assert '127.0.0.4: rpc error: code = Unavailable' in r.stderr
    r = three.talosctl_on(2, "version")
    assert r.returncode == 1 and "connection refused" in r.stderr
    subprocess.run([*cli, "mend", "--dir", str(three.dir)], capture_output=True, text=True, check=True)
    r = three.talosctl_on(1, "health", "--wait-timeout", "20s")
    assert r.returncode == 0, r.stderr
    status = subprocess.run([*cli, "status", "--dir", str(three.dir)], capture_output=True, text=True,
                            check=True).stdout
    assert "node 3 127.0.0.6 (Elastic IP 127.0.0.7) stage running" in status


def test_an_init_node_shows_its_machine_type(three):
    three.set_machine_type(2, "init")
    r = three.talosctl_on(2, "get", "machinetype", "-o", "jsonpath={.spec}")
    assert r.stdout.strip() == "init"
    three.set_machine_type(2, "worker")
    r = three.talosctl_on(2, "etcd", "members")
    assert r.returncode == 1 and "code = Unimplemented desc = member list is only available on control plane nodes" \
        in r.stderr
