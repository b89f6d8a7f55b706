"""A replaced instance with a new private IP, its kubelet's Node, the stale Node a restored etcd keeps, what
`talosctl health` says of it, and the kube-apiserver stand-in (sandbox/kube.py, sandbox/kube_apiserver.py)."""

from __future__ import annotations

import http.client
import json
import ssl
import time

from dr.adapters.kubeapi import KubeAPI
from sandbox import kube


def _bootstrapped(sb, *args: str) -> None:
    deadline = time.monotonic() + 30
    while sb.talosctl_run("bootstrap", *args).returncode != 0:
        assert time.monotonic() < deadline, sb.calls()[-1]
        time.sleep(0.1)
    while not sb.node_view().etcd_running:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_the_kubelet_registers_the_machine_as_its_hostname_with_its_private_ip(sandbox):
    [node] = kube.list_nodes(sandbox.etcd_endpoint)
    assert node["metadata"]["name"] == "talos-sandbox-cp"
    assert kube.node_ips(node) == ["127.0.0.2"]
    assert sandbox.talosctl_run("health", "--wait-timeout", "5s", "--control-plane-nodes",
                                sandbox.private_ip).returncode == 0


def test_a_restored_etcd_keeps_the_old_node_and_health_refuses_it_until_it_is_deleted(sandbox, tmp_path):
    sb = sandbox
    snap = tmp_path / "before.db"
    assert sb.talosctl_run("etcd", "snapshot", str(snap)).returncode == 0
    sb.replace_instance("127.0.0.12")
    assert (sb.private_ip, sb.info.hostname) == ("127.0.0.12", "ip-127-0-0-12")
    assert json.loads(sb.outputs_file.read_text())["nodePrivateIp"] == "127.0.0.12"
    _bootstrapped(sb)  # what `pulumi up` does: a fresh, empty etcd; its kubelet registers the new Node
    assert [n["metadata"]["name"] for n in kube.list_nodes(sb.etcd_endpoint)] == ["ip-127-0-0-12"]
    # The restore: reset, then bootstrap --recover-from the snapshot that holds the old Node.
    assert sb.talosctl_run("reset", "--graceful=false", "--reboot", "--system-labels-to-wipe=EPHEMERAL",
                           "--wait=false").returncode == 0
    time.sleep(0.5)
    _bootstrapped(sb, f"--recover-from={snap}")
    names = sorted(n["metadata"]["name"] for n in kube.list_nodes(sb.etcd_endpoint))
    assert names == ["ip-127-0-0-12", "talos-sandbox-cp"]
    r = sb.talosctl_run("health", "--wait-timeout", "1s", "--control-plane-nodes", sb.private_ip)
    assert r.returncode == 1
    # pkg/cluster/cluster.go NodesMatch, as K8sAllNodesReportedAssertion reports it.
    assert 'waiting for all k8s nodes to report: unexpected nodes with IPs ["127.0.0.2"]' in r.stderr
    # The stand-in API, with the kubeconfig's admin certificate: list, then delete the stale Node.
    api = KubeAPI.from_kubeconfig(sb.paths.kubeconfig.read_text())
    assert {n["metadata"]["name"] for n in api.list_nodes()} == set(names)
    assert api.delete_node("talos-sandbox-cp") is True
    assert api.delete_node("talos-sandbox-cp") is False  # 404: already gone
    assert sb.talosctl_run("health", "--wait-timeout", "5s", "--control-plane-nodes",
                           sb.private_ip).returncode == 0


def test_a_stale_node_that_reports_only_readiness_fails_the_ready_check(sandbox):
    """A stale Node that carries the current IP among others still reads NotReady: no kubelet posts for it."""
    sb = sandbox
    stale = kube.node_object("ip-127-0-0-2-old", "127.0.0.2", "2026-01-01T00:00:00Z")
    sb.put("/registry/minions/ip-127-0-0-2-old", json.dumps(stale))
    sb.delete_prefix("/registry/minions/talos-sandbox-cp")
    r = sb.talosctl_run("health", "--wait-timeout", "1s", "--control-plane-nodes", sb.private_ip)
    assert "waiting for all k8s nodes to report ready: some nodes are not ready: [ip-127-0-0-2-old]" in r.stderr


def test_the_stand_in_wants_the_clusters_client_certificate(sandbox):
    doc = KubeAPI.parse_kubeconfig(sandbox.paths.kubeconfig.read_text())
    ctx = ssl.create_default_context(cadata=doc.ca_pem.decode())  # trusts the server, presents nothing
    conn = http.client.HTTPSConnection(doc.host, doc.port, context=ctx, timeout=5)
    try:
        conn.request("GET", "/api/v1/nodes")
        conn.getresponse()
        refused = False
    except (ssl.SSLError, ConnectionError, OSError):
        refused = True
    finally:
        conn.close()
    assert refused
