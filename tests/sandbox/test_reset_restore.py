"""The node's state machine: reset (each scope), maintenance, apply-config, bootstrap --recover-from."""

from __future__ import annotations

import time

import pytest
import yaml

from tests.sandbox.test_node import fails, ok

pytestmark = pytest.mark.slow  # a sandbox per test, resets and reboots (2-4.5 s each)


@pytest.fixture
def node(sandbox_factory):
    return sandbox_factory("node", with_s3=False, reboot_seconds=0.3, bootstrap_not_ready_seconds=0.2)


def stage(sb, *extra):
    return ok(sb.talosctl_run(*extra, "get", "machinestatus", "-o", "jsonpath={.spec.stage}")).stdout.strip()


def wait_etcd_running(sb, timeout=20.0):
    """etcd starts after `bootstrap` returned (the node does it asynchronously)."""
    deadline = time.monotonic() + timeout
    while not sb.node_view().etcd_running:
        assert time.monotonic() < deadline, f"etcd did not start: {sb.node_view()}"
        time.sleep(0.05)


def test_reset_ephemeral_then_recover_brings_back_exactly_the_snapshot(node, tmp_path):
    node.put("/registry/configmaps/demo/before", "in the snapshot")
    before = node.get_prefix("/registry/")
    snap = tmp_path / "snap.db"
    ok(node.talosctl_run("-n", "127.0.0.2", "etcd", "snapshot", str(snap)))
    # changes after the snapshot must be gone after the restore
    node.put("/registry/configmaps/demo/after", "not in the snapshot")
    node.delete_prefix("/registry/deployments/demo/")
    endpoint = node.etcd_endpoint

    r = ok(node.talosctl_run("-n", "127.0.0.2", "reset", "--graceful=false", "--reboot",
                             "--system-labels-to-wipe=EPHEMERAL", "--timeout", "20s"))
    assert "post check passed" in r.stderr
    # configured, etcd waiting for bootstrap (the stage stays booting: the boot waits for etcd), data gone
    assert stage(node) == "booting"
    svc = ok(node.talosctl_run("service", "etcd")).stdout
    assert "STATE    Preparing" in svc
    assert not (node.dir / "node" / "etcd").exists()
    st = node.node_state()
    assert st.resets[-1]["labels"] == ["EPHEMERAL"] and not st.whole_disk_wiped
    fails(node.talosctl_run("health", "--wait-timeout", "0.3s"), "context deadline exceeded")

    # a file that is not a readable database is refused by talosctl's local status check, before any upload
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\0" * 4096)
    time.sleep(0.25)  # past the not-ready window
    r = node.talosctl_run("bootstrap", f"--recover-from={junk}")
    assert r.returncode == 1 and "snapshot status" in r.stderr, r.stderr
    assert "Preparing" in ok(node.talosctl_run("service", "etcd")).stdout  # the refusal left etcd waiting

    r = ok(node.talosctl_run("-n", "127.0.0.2", "bootstrap", f"--recover-from={snap}"))
    assert r.stdout.startswith(f'recovering from snapshot "{snap}": hash ')
    wait_etcd_running(node)
    assert node.etcd_endpoint == endpoint
    assert node.get_prefix("/registry/") == before  # exactly the snapshot's keys and values
    ok(node.talosctl_run("health", "--wait-timeout", "10s"))
    assert stage(node) == "running"
    fails(node.talosctl_run("bootstrap", f"--recover-from={snap}"), "AlreadyExists")


def test_bootstrap_not_ready_window_then_fresh_bootstrap(node, tmp_path):
    node.set_faults(bootstrap_not_ready_seconds=1.5, reboot_seconds=0.2)
    ok(node.talosctl_run("reset", "--graceful=false", "--reboot", "--system-labels-to-wipe", "EPHEMERAL"))
    r = fails(node.talosctl_run("bootstrap"), "error executing bootstrap", "code = FailedPrecondition")
    assert "bootstrap is not available yet" in r.stderr or "time is not in sync yet" in r.stderr
    deadline = time.monotonic() + 10
    while True:
        r = node.talosctl_run("bootstrap")
        if r.returncode == 0:
            break
        assert "FailedPrecondition" in r.stderr, r.stderr
        assert time.monotonic() < deadline
        time.sleep(0.2)
    wait_etcd_running(node)
    # A fresh bootstrap starts an empty etcd; the kubelet then registers the machine's Node (sandbox/kube.py).
    assert node.keys() == ["/registry/minions/talos-sandbox-cp"]
    ok(node.talosctl_run("health", "--wait-timeout", "5s"))


def test_reset_state_and_ephemeral_goes_to_maintenance_then_apply_config_and_recover(node, tmp_path):
    before = node.get_prefix("/registry/")
    snap = tmp_path / "snap.db"
    ok(node.talosctl_run("etcd", "snapshot", str(snap)))
    ok(node.talosctl_run("reset", "--graceful=false", "--reboot", "--system-labels-to-wipe=STATE",
                         "--system-labels-to-wipe=EPHEMERAL"))
    assert node.node_stage() == "maintenance"
    # maintenance: insecure calls work, authenticated ones do not trust the node's certificate
    # (--insecure dials --nodes itself: the Elastic IP)
    assert ok(node.talosctl_run("-n", "127.0.0.3", "get", "machinestatus", "--insecure", "-o",
                                "jsonpath={.spec.stage}")).stdout.strip() == "maintenance"
    ok(node.talosctl_run("-n", "127.0.0.3", "version", "--insecure"))
    fails(node.talosctl_run("version"), "x509: certificate signed by unknown authority")
    fails(node.talosctl_run("bootstrap", f"--recover-from={snap}"), "x509: certificate signed by unknown authority")
    fails(node.talosctl_run("etcd", "snapshot", str(tmp_path / "x.db")), "unknown authority")

    # a config for another cluster is refused
    wrong = tmp_path / "wrong.yaml"
    doc = yaml.safe_load(node.controlplane_config.read_text())
    doc["cluster"]["clusterName"] = "someone-else"
    wrong.write_text(yaml.safe_dump(doc))
    fails(node.talosctl_run("apply-config", "--insecure", "-n", "127.0.0.3", "--file", str(wrong)),
          "InvalidArgument", "someone-else")
    # a patch that breaks it is refused too; dry-run changes nothing
    fails(node.talosctl_run("apply-config", "--insecure", "-n", "127.0.0.3", "--file", str(node.controlplane_config),
                            "--config-patch", "machine: {type: worker}"), "machine.type")
    ok(node.talosctl_run("apply-config", "--insecure", "-n", "127.0.0.3", "--file", str(node.controlplane_config),
                         "--dry-run"))
    assert node.node_stage() == "maintenance"

    patch = tmp_path / "patch.yaml"
    patch.write_text("machine:\n  certSANs: [127.0.0.1, 203.0.113.10]\n")
    r = ok(node.talosctl_run("apply", "--insecure", "-n", "127.0.0.3", "--file", str(node.controlplane_config),
                             "--config-patch", f"@{patch}"))
    assert "Applied configuration without a reboot" in r.stderr  # maintenance: no reboot, the boot goes on
    assert yaml.safe_load((node.dir / "node" / "state-partition" / "config.yaml").read_text())["machine"][
        "certSANs"] == ["127.0.0.1", "203.0.113.10"]
    node.wait_stage("booting", timeout=10)
    time.sleep(0.2)
    fails(node.talosctl_run("-n", "127.0.0.3", "version", "--insecure"), "certificate required")
    assert "Preparing" in ok(node.talosctl_run("service", "etcd")).stdout
    deadline = time.monotonic() + 10
    while (r := node.talosctl_run("bootstrap", f"--recover-from={snap}")).returncode != 0:
        assert "FailedPrecondition" in r.stderr and time.monotonic() < deadline, r.stderr
        time.sleep(0.1)
    wait_etcd_running(node)
    assert node.get_prefix("/registry/") == before
    assert [c["argv"][0] for c in node.calls()].count("reset") == 1


def test_reset_without_labels_wipes_the_whole_disk_and_the_node_never_returns(node):
    r = fails(node.talosctl_run("reset", "--graceful=false", "--reboot", "--timeout", "1s"), "context deadline exceeded")
    assert "rebooting" in r.stderr
    assert node.node_stage() == "unbootable"
    st = node.node_state()
    assert st.whole_disk_wiped and st.resets[-1]["labels"] == []
    fails(node.talosctl_run("version"), "connection refused")
    fails(node.talosctl_run("-n", "127.0.0.3", "version", "--insecure"), "connection refused")
    assert not (node.dir / "node" / "etcd").exists()
    assert not node.status()["etcd"]["alive"]


def test_reset_without_reboot_halts_until_powered_on(node):
    keys = node.keys()
    ok(node.talosctl_run("reset", "--graceful=false", "--system-labels-to-wipe=STATE"))  # --reboot defaults false
    assert node.node_stage() == "halted"
    fails(node.talosctl_run("version"), "connection refused")
    node.power_on()
    assert node.wait_stage("maintenance", timeout=5) == "maintenance"  # STATE wiped, EPHEMERAL kept
    ok(node.talosctl_run("apply-config", "--insecure", "-n", "127.0.0.3", "-f", str(node.controlplane_config)))
    node.wait_stage("running", timeout=5)
    # etcd's data survived on EPHEMERAL: Talos starts etcd by itself, no bootstrap needed
    fails(node.talosctl_run("bootstrap"), "AlreadyExists")
    assert node.keys() == keys


def test_never_returns_and_insecure_reset_in_maintenance(node):
    node.set_faults(never_returns=True)
    ok(node.talosctl_run("reset", "--graceful=false", "--reboot", "--system-labels-to-wipe=STATE",
                         "--system-labels-to-wipe=EPHEMERAL", "--wait=false"))
    fails(node.talosctl_run("-n", "127.0.0.2", "reset", "--graceful=false", "--reboot",
                            "--system-labels-to-wipe=EPHEMERAL", "--timeout=0.5s"), "connection refused")
    time.sleep(0.5)
    assert node.node_stage() == "rebooting"
    fails(node.talosctl_run("-n", "127.0.0.3", "version", "--insecure"), "connection refused")
    node.set_faults(never_returns=None)
    node.wait_stage("maintenance", timeout=5)
    # in maintenance, reset works with --insecure (and without --wait)
    ok(node.talosctl_run("-n", "127.0.0.3", "reset", "--insecure", "--wait=false", "--reboot",
                         "--system-labels-to-wipe=EPHEMERAL"))
    node.wait_stage("maintenance", timeout=5)
