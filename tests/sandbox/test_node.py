"""The simulated node: access rules, snapshots and their faults, and every refusal that keeps state intact."""

from __future__ import annotations

import json
import os
import stat

import pytest
import yaml

from dr.core.errors import CorruptSnapshot
from dr.core.integrity import verify_file
from sandbox.api import with_addresses
from sandbox.pki import ClusterSecrets

pytestmark = pytest.mark.slow  # the module's sandbox (~1 s); most tests take 0.9-1.9 s


def ok(r):
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r


def fails(r, *texts):
    assert r.returncode == 1, f"expected failure, got exit {r.returncode}: {r.stdout}{r.stderr}"
    for t in texts:
        assert t in r.stderr, f"{t!r} not in {r.stderr!r}"
    return r


def test_version_and_machinestatus_authenticated_and_insecure_on_a_configured_node(shared):
    r = ok(shared.talosctl_run("version"))
    assert "Server:" in r.stdout and "NODE:        127.0.0.2" in r.stdout and "Tag:         v1.13.9" in r.stdout
    assert ok(shared.talosctl_run("-n", "127.0.0.2", "get", "machinestatus", "-o", "jsonpath={.spec.stage}")).stdout \
        == "running\n"
    doc = json.loads(ok(shared.talosctl_run("get", "machinestatus", "-o", "json")).stdout)
    assert doc["spec"] == {"stage": "running", "status": {"ready": True, "unmetConditions": []}}
    assert yaml.safe_load(ok(shared.talosctl_run("get", "ms", "-o", "yaml")).stdout)["spec"]["stage"] == "running"
    # --insecure against a configured node fails in the TLS handshake: it wants a client certificate
    # (with --insecure talosctl dials --nodes itself: the Elastic IP, the address the operator reaches)
    fails(shared.talosctl_run("-n", "127.0.0.3", "version", "--insecure"), "tls: certificate required")
    fails(shared.talosctl_run("-n", "127.0.0.3", "get", "machinestatus", "--insecure"), "certificate required")
    # version --client needs no node at all
    assert "Server:" not in ok(shared.talosctl_run("version", "--client")).stdout


def test_wrong_node_wrong_talosconfig_and_roles(shared, tmp_path):
    # a node apid cannot reach is forwarded and fails; an endpoint nobody answers at is refused
    fails(shared.talosctl_run("-n", "10.9.8.7", "version"), "* 10.9.8.7: rpc error", "dial tcp 10.9.8.7:50000")
    fails(shared.talosctl_run("-e", "10.9.8.7", "-n", "127.0.0.2", "version"),
          "dial tcp 10.9.8.7:50000: connect: connection refused")
    other = tmp_path / "other-talosconfig"
    other.write_text(with_addresses(ClusterSecrets.generate("talos-sandbox").talosconfig("127.0.0.2"), "127.0.0.3",
                                    "127.0.0.2"))
    fails(shared.talosctl_run("--talosconfig", str(other), "version"), "x509: certificate signed by unknown authority")
    fails(shared.talosctl_run("--talosconfig", str(tmp_path / "missing"), "version"), "no such file or directory")
    fails(shared.talosctl_run("--context", "nope", "version"), 'context "nope" is not defined')

    backup = shared.issue_talosconfig(tmp_path / "backup-talosconfig", ["os:etcd:backup"])
    snap = tmp_path / "by-backup-role.db"
    ok(shared.talosctl_run("--talosconfig", str(backup), "etcd", "snapshot", str(snap)))
    fails(shared.talosctl_run("--talosconfig", str(backup), "version"), "PermissionDenied")
    fails(shared.talosctl_run("--talosconfig", str(backup), "reset", "--graceful=false", "--reboot",
                              "--system-labels-to-wipe=EPHEMERAL"), "PermissionDenied")
    assert shared.node_stage() == "running"


def test_etcd_snapshot_is_real_and_private(shared, tmp_path):
    shared.put("/registry/configmaps/demo/marker", "snapshot-test")
    dest = tmp_path / "snap.db"
    r = ok(shared.talosctl_run("-n", "127.0.0.2", "etcd", "snapshot", str(dest)))
    size = dest.stat().st_size
    lines = r.stdout.splitlines()
    assert lines[0] == f'etcd snapshot saved to "{dest}" ({size} bytes)'
    assert lines[1].startswith("snapshot info: hash ") and ", revision " in lines[1] and ", total keys " in lines[1]
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    assert size % 512 == 32
    verify_file(dest)  # the project's own trailer check passes
    assert not (tmp_path / "snap.db.part").exists()
    r = shared.etcdctl("snapshot", "status", str(dest), "-w", "json")
    assert json.loads(r.stdout)["totalKey"] >= len(shared.keys())
    shared.delete_prefix("/registry/configmaps/demo/marker")


def test_snapshot_faults(shared, tmp_path):
    dest = tmp_path / "s.db"
    shared.set_faults(snapshot_truncate_bytes=100)
    r = fails(shared.talosctl_run("etcd", "snapshot", str(dest)), "sha256 checksum not found (size ")
    assert not dest.exists() and not (tmp_path / "s.db.part").exists()

    shared.set_faults(snapshot_truncate_bytes=None, die_mid_snapshot=True)
    fails(shared.talosctl_run("etcd", "snapshot", str(dest)), "error reading snapshot", "code = Unavailable")
    assert not dest.exists() and not (tmp_path / "s.db.part").exists()

    shared.set_faults(die_mid_snapshot=None, snapshot_corrupt=True)
    r = shared.talosctl_run("etcd", "snapshot", str(dest))
    # talosctl only checks the size, so it saves the damaged file; the project's hash check must catch it
    assert dest.exists() and dest.stat().st_size % 512 == 32, r.stderr
    with pytest.raises(CorruptSnapshot):
        verify_file(dest)

    shared.set_faults(snapshot_corrupt=None, unreachable=True)
    fails(shared.talosctl_run("etcd", "snapshot", str(tmp_path / "u.db")), "connection refused")
    fails(shared.talosctl_run("version"), "connection refused")
    assert not (tmp_path / "u.db").exists()
    shared.clear_faults()
    ok(shared.talosctl_run("version"))


def test_refusals_that_leave_the_running_node_alone(shared, tmp_path):
    keys = shared.keys()
    # --graceful (the default) is accepted and then fails on the node (it cannot leave etcd): nothing is wiped
    ok(shared.talosctl_run("reset", "--reboot", "--system-labels-to-wipe=EPHEMERAL", "--wait=false"))
    assert shared.node_state().resets[-1]["failed"] == "leave etcd"
    fails(shared.talosctl_run("reset", "--insecure", "--graceful=false", "--system-labels-to-wipe=EPHEMERAL"),
          "cannot use --wait and --insecure together")
    fails(shared.talosctl_run("reset", "--graceful=false", "--system-labels-to-wipe=BOOT"),
          'failed to get volume status with label "BOOT"')
    fails(shared.talosctl_run("apply-config", "--insecure", "-n", "127.0.0.3", "--file", str(shared.controlplane_config)),
          "tls: certificate required")
    fails(shared.talosctl_run("bootstrap"), "AlreadyExists", "etcd data directory is not empty")
    snap = tmp_path / "s.db"
    ok(shared.talosctl_run("etcd", "snapshot", str(snap)))
    fails(shared.talosctl_run("bootstrap", f"--recover-from={snap}"), "AlreadyExists", "etcd data directory is not empty")
    assert shared.node_stage() == "running" and shared.keys() == keys
    assert all(r.get("failed") for r in shared.node_state().resets)


def test_health_and_kubeconfig(shared, tmp_path):
    r = ok(shared.talosctl_run("health", "--wait-timeout", "5s", "--control-plane-nodes", "127.0.0.2"))
    # server-side health prints everything on stderr (cmd/talosctl/cmd/talos/health.go)
    assert r.stderr.startswith('discovered nodes: ["127.0.0.2"]') and "waiting for etcd to be healthy: OK" in r.stderr
    shared.set_faults(health_never=True)
    r = fails(shared.talosctl_run("health", "--wait-timeout", "0.5s"), "context deadline exceeded")
    assert "waiting for etcd to be healthy: etcd is unhealthy" in r.stderr
    shared.clear_faults()

    kc = tmp_path / "kubeconfig"
    ok(shared.talosctl_run("kubeconfig", str(kc), "--force", "--merge=false"))
    assert stat.S_IMODE(os.stat(kc).st_mode) == 0o600
    doc = yaml.safe_load(kc.read_text())
    # The Elastic IP, port 6443 unless another sandbox's kube-apiserver stand-in holds it (sandbox/kube_apiserver.py)
    assert doc["clusters"][0]["cluster"]["server"] == f"https://127.0.0.3:{shared.info.kube_port}"
    fails(shared.talosctl_run("kubeconfig", str(kc), "--merge=false"), "already exists, use --force")
    d = tmp_path / "dir"
    d.mkdir()
    ok(shared.talosctl_run("kubeconfig", str(d), "--merge=false"))  # a directory gets /kubeconfig
    assert (d / "kubeconfig").read_text().startswith("apiVersion: v1")
    out = ok(shared.talosctl_run("kubeconfig", "-")).stdout
    assert yaml.safe_load(out)["current-context"] == f"admin@{shared.cluster_name}"
