"""The three-node sandbox (`Sandbox.up(dir, nodes=3)`): three real etcd members of one cluster, each node with its own
addresses and apid; Talos v1.13.9's join loop, wait-for-bootstrap and recovery (sandbox/membership.py,
sandbox/CONFORMANCE.md rows "multi-node: ...")."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sandbox import etcd, procs
from sandbox.api import Sandbox
from sandbox.testing import require_etcd


def _up(root: Path, **kw) -> Sandbox:
    require_etcd()
    kw.setdefault("reboot_seconds", 0.3)
    kw.setdefault("bootstrap_not_ready_seconds", 0.2)
    return Sandbox.up(root, nodes=3, with_s3=False, **kw)


@pytest.fixture(scope="module")
def three(tmp_path_factory) -> Iterator[Sandbox]:
    """One three-node sandbox for the tests that leave it as they found it."""
    sb = _up(tmp_path_factory.mktemp("three") / "sb")
    yield sb
    sb.down()


@pytest.fixture
def fresh(tmp_path) -> Iterator[Sandbox]:
    sb = _up(tmp_path / "sb")
    yield sb
    sb.down()


def _ok(r) -> str:
    assert r.returncode == 0, r.stderr
    return r.stdout


# The node's not-ready window after a boot (v1alpha1_server.go Bootstrap: CRI first, then time sync): a person or
# talos-dr retries these two refusals; anything else is a real failure.
_NOT_READY_YET = ("bootstrap is not available yet", "time is not in sync yet")


def _bootstrap_when_ready(sb: Sandbox, i: int, *args: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        r = sb.talosctl_on(i, "bootstrap", *args)
        if r.returncode == 0 or not any(m in r.stderr for m in _NOT_READY_YET) or time.monotonic() > deadline:
            return _ok(r)
        time.sleep(0.1)


def _member_rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.strip().splitlines()[1:]]


def test_three_voting_members_each_with_every_seeded_key(three):
    members = three.etcd_members()
    assert sorted(m["name"] for m in members) == ["talos-sandbox-cp", "talos-sandbox-cp-2", "talos-sandbox-cp-3"]
    assert not any(m["is_learner"] for m in members)
    # Every member advertises its node's private IP (etcd runs on the node's address).
    by_name = {m["name"]: m for m in members}
    for m in three.members:
        assert by_name[m.hostname]["peer_urls"][0].startswith(f"http://{m.private_ip}:")
        assert by_name[m.hostname]["client_urls"][0].startswith(f"http://{m.private_ip}:")
    seeded = three.seed_data()
    contents = [etcd.get_prefix(node.info.etcd_endpoint, "/") for node in three.nodes()]
    assert set(seeded) <= set(contents[0])
    assert contents[0] == contents[1] == contents[2]
    assert [(m.index, m.private_ip, m.public_ip) for m in three.members] == [
        (1, "127.0.0.2", "127.0.0.3"), (2, "127.0.0.4", "127.0.0.5"), (3, "127.0.0.6", "127.0.0.7")]


def test_outputs_and_talosconfig_name_every_node(three):
    outputs = json.loads(three.outputs_file.read_text())
    nodes = outputs["controlPlaneNodes"]
    assert [(n["name"], n["privateIp"], n["publicIp"]) for n in nodes] == [
        (m.hostname, m.private_ip, m.public_ip) for m in three.members]
    assert len({n["instanceId"] for n in nodes}) == 3 and len({n["availabilityZone"] for n in nodes}) == 3
    ctx = next(iter(yaml.safe_load(three.talosconfig.read_text())["contexts"].values()))
    assert ctx["nodes"] == ["127.0.0.2", "127.0.0.4", "127.0.0.6"]
    assert ctx["endpoints"] == [m.apid_endpoint for m in three.members]


def test_talosctl_per_node(three):
    for m in three.members:
        out = _ok(three.talosctl_on(m.index, "etcd", "members"))
        rows = _member_rows(out)
        assert {r[0] for r in rows} == {m.private_ip} and len(rows) == 3
        assert {r[2] for r in rows} == {"talos-sandbox-cp", "talos-sandbox-cp-2", "talos-sandbox-cp-3"}
        assert f"NODE     {m.private_ip}" in _ok(three.talosctl_on(m.index, "service", "etcd"))
        assert "controlplane" in _ok(three.talosctl_on(m.index, "get", "machinetype"))
        assert m.private_ip in _ok(three.talosctl_on(m.index, "version"))


def test_apid_forwards_to_the_named_node(three):
    """An authenticated call to node 1's Elastic IP naming node 2's private IP is served by node 2."""
    r = three.talosctl_run("-e", three.members[0].apid_endpoint, "-n", "127.0.0.4", "etcd", "status")
    own = next(m for m in three.etcd_members() if m["name"] == "talos-sandbox-cp-2")
    assert own["id"] in _ok(r).splitlines()[1].split()[1]


def test_second_bootstrap_refused_on_a_node_with_data(three):
    r = three.talosctl_on(2, "bootstrap")
    assert r.returncode == 1
    assert "code = AlreadyExists desc = etcd data directory is not empty" in r.stderr
    assert len(three.etcd_members()) == 3


def test_lose_one_quorum_holds(fresh):
    fresh.lose(3)
    fresh.put("/test/after-loss", "written")
    assert fresh.get_prefix("/test/") == {"/test/after-loss": "written"}
    snap = fresh.dir / "from-2.db"
    _ok(fresh.talosctl_on(2, "etcd", "snapshot", str(snap)))
    assert etcd.snapshot_status(snap)["totalKey"] > len(fresh.seed_data())
    r = fresh.talosctl_run("-e", fresh.members[0].apid_endpoint, "-n", "127.0.0.6", "version")
    assert r.returncode == 1
    assert 'code = Unavailable desc = connection error: desc = "transport: Error while dialing: dial tcp ' \
           '127.0.0.6:50000: i/o timeout"' in r.stderr
    fresh.power_on(3)
    fresh.wait_voters(3)
    assert etcd.get_prefix(fresh.node_at(3).info.etcd_endpoint, "/test/") == {"/test/after-loss": b"written"}


def test_lose_two_no_leader_snapshot_still_works(fresh):
    fresh.lose(2)
    fresh.lose(3)
    survivor = fresh.node_at(1)
    assert procs.wait_for(lambda: etcd.status(survivor.info.etcd_endpoint)["leader"] == 0, 10)
    # Talos's etcd health check (a quorum read) fails; the process runs.
    assert procs.wait_for(lambda: survivor.snapshot_state().etcd_health == "Fail", 10)
    service = _ok(fresh.talosctl_on(1, "service", "etcd"))
    assert re.search(r"^HEALTH +Fail$", service, re.M) and "Health check failed" in service
    r = fresh.talosctl_on(1, "etcd", "members")
    assert r.returncode == 1 and "etcdserver: no leader" in r.stderr
    # etcd serves Maintenance.Snapshot from its own backend, leader or not.
    snap = fresh.dir / "survivor.db"
    _ok(fresh.talosctl_on(1, "etcd", "snapshot", str(snap)))
    assert etcd.snapshot_status(snap)["totalKey"] >= len(fresh.seed_data())
    with pytest.raises(etcd.EtcdFailure):
        etcd._call(survivor.info.etcd_endpoint, "kv/put", {"key": "eA==", "value": "eA=="}, timeout=2)


def test_wipe_all_then_recover_on_one_the_others_join(tmp_path):
    sb = _up(tmp_path / "sb", reboot_seconds=2.0)
    try:
        sb.put("/test/before", "kept")
        snap = tmp_path / "backup.db"
        _ok(sb.talosctl_on(1, "etcd", "snapshot", str(snap)))
        for i in (1, 2, 3):
            _ok(sb.talosctl_on(i, "reset", "--graceful=false", "--reboot", "--system-labels-to-wipe", "EPHEMERAL",
                               "--wait=false"))
        for i in (1, 2, 3):  # each boots with empty data, finds no quorum anywhere, waits for a bootstrap
            node = sb.node_at(i)
            assert procs.wait_for(lambda n=node: n.snapshot_state().etcd_waiting, 20), i
        time.sleep(0.5)
        assert all(sb.node_at(i).snapshot_state().etcd_waiting for i in (1, 2, 3))
        assert "Running pre state" in _ok(sb.talosctl_on(2, "service", "etcd"))
        # etcd members on a node whose etcd is not running waits (machined's client: WaitForReady) until cancelled.
        with pytest.raises(subprocess.TimeoutExpired):
            sb.talosctl_on(2, "etcd", "members", timeout=1.5)
        _bootstrap_when_ready(sb, 1, "--recover-from", str(snap))
        members = sb.wait_voters(3, timeout=40)
        assert len(members) == 3
        assert sb.get_prefix("/test/") == {"/test/before": "kept"}
        for node in sb.nodes():
            assert etcd.get_prefix(node.info.etcd_endpoint, "/test/") == {"/test/before": b"kept"}
        assert "etcd is waiting to join the cluster" in (tmp_path / "sb/logs/machined-2.log").read_text()
    finally:
        sb.down()


def test_replaced_instance_with_quorum_joins_and_its_old_member_goes(fresh):
    old = {m["name"]: m["id"] for m in fresh.etcd_members()}
    instance = fresh.members[2].instance_id
    fresh.lose(3, disk=True)
    fresh.power_on(3)  # a terminated instance does not come back
    assert fresh.node_at(3).snapshot_state().phase == "halted"
    fresh.replace_instance(3)
    listed = json.loads(fresh.outputs_file.read_text())["controlPlaneNodes"][2]
    assert listed["privateIp"] == "127.0.0.6" and listed["instanceId"] not in ("", instance)
    members = fresh.wait_voters(3, timeout=40)
    new = {m["name"]: m["id"] for m in members}
    assert set(new) == set(old)
    assert new["talos-sandbox-cp-3"] != old["talos-sandbox-cp-3"]
    assert new["talos-sandbox-cp"] == old["talos-sandbox-cp"]
    assert fresh.node_at(3).snapshot_state().stage == "running"


def test_down_stops_every_process(tmp_path):
    sb = _up(tmp_path / "sb")
    assert all(sb.pids_alive().values()) and len(sb.pids_alive()) == 6
    sb.down()
    assert not any(sb.pids_alive().values())
    assert not sb.running()
    for node in sb.nodes():
        assert procs.find(str(node.paths.etcd_data), exe=etcd.ETCD) == []


def _client(sb: Sandbox, via: int, nodes: list[str]):
    from dr.adapters.talosapi import TalosClient
    from dr.adapters.talosctl import load_talosconfig, talosconfig_credentials

    m = sb.members[via - 1]
    creds = talosconfig_credentials(load_talosconfig(sb.talosconfig))
    port = sb.node_at(via).info.apid_port
    return TalosClient(m.public_ip, creds, port=port, nodes=nodes, timeout=30, idle_timeout=2.0)


def _grpc_snapshot(c) -> int:
    from dr.core.integrity import SnapshotDigest

    digests: list[SnapshotDigest] = []
    for _ in c.iter_etcd_snapshot(digests):
        pass
    return digests[0].size


def test_each_nodes_apid_serves_and_forwards_over_grpc(fresh):
    """The real Talos API client (dr.adapters.talosapi): each node's own apid on its Elastic IP, and node 1's apid
    forwarding to node 2 by `nodes`; node 2 off: the forwarded call fails, the direct ones to the others work."""
    from dr.core.errors import NodeError, NodeUnreachable

    sizes = {_grpc_snapshot(_client(fresh, i, [fresh.members[i - 1].private_ip])) for i in (1, 2, 3)}
    assert all(s > 1000 for s in sizes)
    forwarded = _client(fresh, 1, ["127.0.0.4"])
    assert _grpc_snapshot(forwarded) > 1000 and forwarded.hostname == "127.0.0.4"
    fresh.lose(2)
    with pytest.raises((NodeError, NodeUnreachable)) as ei:
        _grpc_snapshot(_client(fresh, 1, ["127.0.0.4"]))
    assert "127.0.0.4:50000: i/o timeout" in str(ei.value)
    assert _grpc_snapshot(_client(fresh, 3, ["127.0.0.6"])) > 1000


def test_the_kubernetes_api_answers_with_node_1_lost(fresh):
    """The cluster endpoint stands for a load balancer in front of every control-plane node: with node 1 off, the
    Kubernetes API still reads the cluster (from a member with a leader)."""
    from dr.adapters.kubeapi import KubeAPI

    names = {"talos-sandbox-cp", "talos-sandbox-cp-2", "talos-sandbox-cp-3"}
    assert procs.wait_for(lambda: {n["metadata"]["name"] for n in KubeAPI.from_kubeconfig(
        fresh.paths.kubeconfig.read_text()).list_nodes()} == names, 15)
    fresh.lose(1)
    api = KubeAPI.from_kubeconfig(fresh.paths.kubeconfig.read_text())
    assert {n["metadata"]["name"] for n in api.list_nodes()} == names
    r = fresh.talosctl_on(2, "health", "--wait-timeout", "1s", "--control-plane-nodes", "127.0.0.4,127.0.0.6")
    assert r.returncode == 1
    assert "waiting for etcd members to be control plane nodes: etcd member ips" in r.stderr


def test_two_instances_replaced_wait_then_the_survivor_recovers_the_cluster(tmp_path):
    """Quorum lost for good (two instances terminated): the replacements cannot join the survivor (no leader), they
    wait for a bootstrap; a snapshot from the survivor, its EPHEMERAL wiped, `bootstrap --recover-from` there: all
    three join one cluster again with every key."""
    sb = _up(tmp_path / "sb", reboot_seconds=1.0)
    try:
        sb.put("/test/kept", "yes")
        sb.lose(2, disk=True)
        sb.lose(3, disk=True)
        sb.replace_instance(2)
        sb.replace_instance(3)
        for i in (2, 3):
            node = sb.node_at(i)
            assert procs.wait_for(lambda n=node: n.snapshot_state().etcd_waiting, 20), i
        # The survivor's answer to their member list: at first it may still be waiting out its election timeout (the
        # linearizable read times out), then etcd itself says it has no leader; the join loop logs each new reason.
        log = tmp_path / "sb/logs/machined-2.log"
        assert procs.wait_for(lambda: "etcdserver: no leader" in log.read_text(), 20), log.read_text()
        snap = tmp_path / "survivor.db"
        _ok(sb.talosctl_on(1, "etcd", "snapshot", str(snap)))
        _ok(sb.talosctl_on(1, "reset", "--graceful=false", "--reboot", "--system-labels-to-wipe", "EPHEMERAL",
                           "--wait=false"))
        assert procs.wait_for(lambda: sb.node_at(1).snapshot_state().etcd_waiting, 20)
        _bootstrap_when_ready(sb, 1, "--recover-from", str(snap))
        assert len(sb.wait_voters(3, timeout=40)) == 3
        for node in sb.nodes():
            assert etcd.get_prefix(node.info.etcd_endpoint, "/test/") == {"/test/kept": b"yes"}
    finally:
        sb.down()
