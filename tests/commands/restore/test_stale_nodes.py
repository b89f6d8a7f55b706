"""dr.commands.restore.steps.remove_stale_nodes against the sandbox's kube-apiserver stand-in: only a Node no
machine answers for is deleted (talos-fidelity F1)."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest

from dr.adapters.talosctl import Talosctl
from dr.commands.restore import steps
from sandbox import kube

LEASE = "/registry/leases/kube-node-lease/"


@pytest.fixture
def setup(sandbox, tmp_path, monkeypatch):
    monkeypatch.setattr(steps, "STALE_LEASE_WAIT", 0.6)
    t = Talosctl(sandbox.private_ip, sandbox.talosconfig, binary=str(sandbox.talosctl), endpoint=sandbox.public_ip)
    monkeypatch.setenv("TALOS_SANDBOX_DIR", str(sandbox.dir))
    return sandbox, t, tmp_path


def _foreign(sb, name: str, ip: str) -> None:
    sb.put(kube.NODES_PREFIX + name, json.dumps(kube.node_object(name, ip, "2026-12-01T00:00:00Z")))


def run(sb, t, d):
    out, err = io.StringIO(), io.StringIO()
    removed = steps.remove_stale_nodes(t, d, {sb.private_ip, sb.public_ip}, 5, 0.1, out, err, "dr.restore")
    return removed, out.getvalue(), err.getvalue()


def test_a_node_of_another_address_with_no_heartbeat_is_removed_and_said_why(setup):
    sb, t, d = setup
    _foreign(sb, "ip-10-0-1-57", "10.0.1.57")
    sb.put(LEASE + "ip-10-0-1-57", json.dumps({"metadata": {"resourceVersion": "7"},
                                               "spec": {"renewTime": "2026-12-01T00:00:00.000000Z"}}))
    removed, out, _ = run(sb, t, d)
    assert removed == ["ip-10-0-1-57"]
    assert "removed Kubernetes Node ip-10-0-1-57 (InternalIP 10.0.1.57)" in out and "did not renew its Lease" in out
    assert [n["metadata"]["name"] for n in kube.list_nodes(sb.etcd_endpoint)] == ["talos-sandbox-cp"]
    assert not list(d.glob(".kubeconfig-*")), "the temporary kubeconfig (admin credentials) is removed"


def test_a_node_whose_kubelet_renews_its_lease_is_kept(setup):
    sb, t, d = setup
    _foreign(sb, "worker-1", "10.0.1.80")
    stop = threading.Event()

    def kubelet():
        n = 0
        while not stop.is_set():
            n += 1
            sb.put(LEASE + "worker-1", json.dumps({"metadata": {"resourceVersion": str(n)},
                                                   "spec": {"renewTime": f"2026-12-06T00:00:{n % 60:02d}Z"}}))
            time.sleep(0.1)

    th = threading.Thread(target=kubelet, daemon=True)
    th.start()
    try:
        removed, _, err = run(sb, t, d)
    finally:
        stop.set()
        th.join()
    assert removed == []
    assert "worker-1" in err and "renewed its Lease" in err and "kept" in err
    assert "worker-1" in {n["metadata"]["name"] for n in kube.list_nodes(sb.etcd_endpoint)}


def test_the_current_machines_node_is_never_a_candidate(setup):
    sb, t, d = setup
    removed, out, err = run(sb, t, d)
    assert removed == [] and out == "" and err == ""


def test_an_unreachable_api_warns_with_the_manual_fix_and_goes_on(setup):
    sb, t, d = setup
    _foreign(sb, "ip-10-0-1-57", "10.0.1.57")
    sb.node.stop_everything()  # etcd down: the API answers 503 until the deadline
    sb.set_faults(unreachable=True)
    out, err = io.StringIO(), io.StringIO()
    assert steps.remove_stale_nodes(t, d, {sb.private_ip}, 0.5, 0.1, out, err, "dr.restore") == []
    assert "could not check the cluster's Kubernetes Nodes" in err.getvalue()
    assert "kubectl delete node NAME" in err.getvalue()
