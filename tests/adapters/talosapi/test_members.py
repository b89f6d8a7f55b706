"""Asking three etcd members through their apids (dr.adapters.talosapi.members) and choosing one
(dr.core.member_choice), against a real three-member etcd cluster on loopback, each member behind its own simulated
apid (sandbox/apid.py): real leader election, real loss of quorum."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dr.adapters.ports import free_port
from dr.adapters.talosapi import TalosClient
from dr.adapters.talosapi.members import ask_all
from dr.core.cluster_nodes import ClusterNode
from dr.core.errors import NoQuorum
from dr.core.integrity import TrailerHasher
from dr.core.member_choice import choose
from sandbox import etcd
from sandbox.apid import SimulatedApid
from sandbox.testing import require_etcd

pytestmark = pytest.mark.slow


class Cluster:
    def __init__(self, base: Path, os_ca):
        require_etcd()
        self.names = ["cp-1", "cp-2", "cp-3"]
        ports = [(free_port(), free_port()) for _ in self.names]
        initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, (_, p) in zip(self.names, ports, strict=True))
        self.endpoints = [f"http://127.0.0.1:{c}" for c, _ in ports]
        self.procs: list[subprocess.Popen] = []
        for n, (c, p) in zip(self.names, ports, strict=True):
            self.procs.append(subprocess.Popen(
                [etcd.ETCD, "--name", n, "--data-dir", str(base / n), "--listen-client-urls", f"http://127.0.0.1:{c}",
                 "--advertise-client-urls", f"http://127.0.0.1:{c}", "--listen-peer-urls", f"http://127.0.0.1:{p}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}", "--initial-cluster", initial],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.apids = [SimulatedApid(ep, *os_ca, host="127.0.0.1").start() for ep in self.endpoints]
        # the stack's view: name, "private IP" (here the address each apid is dialed at), its port in public_ip
        self.nodes = [ClusterNode(n, f"127.0.0.1:{a.port}", f"127.0.0.1:{a.port}")
                      for n, a in zip(self.names, self.apids, strict=True)]
        self.wait(lambda: all(_has_leader(ep) for ep in self.endpoints), "the cluster did not elect a leader")
        etcd.put(self.endpoints[0], "/registry/ha/key", "value")

    @staticmethod
    def wait(cond, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, what
            time.sleep(0.2)

    def stop(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGTERM)
        self.procs[i].wait(10)

    def close(self) -> None:
        for a in self.apids:
            a.stop()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)


def _has_leader(endpoint: str) -> bool:
    try:
        return int(etcd._call(endpoint, "maintenance/status", {}).get("leader", 0)) != 0
    except etcd.EtcdFailure:
        return False


@pytest.fixture
def cluster(tmp_path, os_ca) -> Iterator[Cluster]:
    c = Cluster(tmp_path, os_ca)
    yield c
    c.close()


def _ask(c: Cluster, creds, timeout: float = 3.0):
    def dial(n: ClusterNode) -> TalosClient:
        host, port = n.public_ip.split(":")
        return TalosClient(host, creds, port=int(port), timeout=3 * timeout + 5)

    return ask_all(c.nodes, dial, timeout=timeout)


def test_three_members_then_one_lost_then_quorum_lost(cluster, make_creds):
    creds = make_creds("os:etcd:backup")
    answers = _ask(cluster, creds)
    assert all(a.members is not None and len(a.members) == 3 for a in answers)
    assert {m.name for m in answers[0].members or ()} == set(cluster.names)
    choice = choose(cluster.nodes, answers)
    assert choice.quorum and len(choice.judgement.agreeing) == 3 and choice.source.state == "follower"
    assert choice.source.member_id != choice.judgement.leader
    # the member chosen streams a snapshot that verifies
    src = cluster.nodes[cluster.nodes.index(choice.source.node)]
    host, port = src.public_ip.split(":")
    hasher = TrailerHasher("snapshot")
    for chunk in TalosClient(host, creds, port=int(port), timeout=30).iter_etcd_snapshot():
        hasher.update(chunk)
    assert hasher.finish().size > 0

    # one member lost (its apid still answers: etcd is what is gone, so the calls hang until the timeout)
    leader_name = next(s.node.name for s in choice.judgement.states if s.state == "leader")
    lost = cluster.names.index(leader_name)  # lose the leader itself: the others elect a new one
    cluster.stop(lost)
    others = [ep for i, ep in enumerate(cluster.endpoints) if i != lost]
    cluster.wait(lambda: all(_has_leader(ep) for ep in others), "the two left did not elect a new leader")
    began = time.monotonic()
    choice = choose(cluster.nodes, _ask(cluster, creds, timeout=2.0))
    assert time.monotonic() - began < 15  # asked in parallel: one timeout, not one per call and node
    assert choice.quorum and choice.quorum_text == "2/3" and choice.source.node != cluster.nodes[lost]
    states = {s.node.name: s.state for s in choice.judgement.states}
    assert states[leader_name] == "not answering"

    # a second member lost: the last one has no leader; its member list says so; no snapshot
    second = next(i for i in range(3) if i != lost)
    cluster.stop(second)
    last = next(i for i in range(3) if i not in (lost, second))
    cluster.wait(lambda: not _has_leader(cluster.endpoints[last]), "the last member kept its leader")
    answers = _ask(cluster, creds, timeout=2.0)
    assert answers[last].status is not None and answers[last].status.leader == 0
    assert answers[last].members is None and "no leader" in answers[last].error
    with pytest.raises(NoQuorum) as info:
        choose(cluster.nodes, answers)
    assert info.value.exit_code == 28 and f"{cluster.names[last]} ({cluster.nodes[last].private_ip}): no leader" in (
        info.value.message)
    assert "--no-quorum-ok" in info.value.hint and "/var/lib/etcd/member/snap/db" in info.value.hint
    # accepted without a quorum: the one member left (a snapshot reads its local backend, no quorum needed)
    choice = choose(cluster.nodes, answers, allow_no_quorum=True)
    assert choice.source.node == cluster.nodes[last] and not choice.quorum
