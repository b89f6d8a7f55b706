"""The sandbox as a cited model of Talos v1.13.9: each test checks one row of sandbox/CONFORMANCE.md, with the
upstream output it must match taken from tests/golden/talosctl/ (not from the sandbox itself)."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from dr.adapters.talosctl import parse_service
from tests.adapters.test_talosctl import transcript
from tests.sandbox.test_node import fails, ok

pytestmark = pytest.mark.slow  # a sandbox per test (1.7-4.6 s each)


@pytest.fixture
def node(sandbox_factory):
    return sandbox_factory("model", with_s3=False, reboot_seconds=0.3, bootstrap_not_ready_seconds=0.2)


def golden(sb, name: str) -> str:
    """A golden transcript with its placeholder addresses replaced by the sandbox's."""
    return transcript(name).replace("203.0.113.10", sb.public_ip).replace("10.0.1.5", sb.private_ip)


def stage(sb) -> str:
    return ok(sb.talosctl_run("get", "machinestatus", "-o", "jsonpath={.spec.stage}")).stdout.strip()


def etcd(sb):
    svc = parse_service(ok(sb.talosctl_run("service", "etcd")).stdout)
    assert svc is not None
    return svc


def wait_for(check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def settle_after_reset(sb):
    wait_for(lambda: sb.node_view().phase in ("booting", "maintenance") and not sb.node_state().timeline)


def test_two_addresses_and_apid_forwarding(node):
    priv, pub = node.private_ip, node.public_ip
    assert (priv, pub) == ("127.0.0.2", "127.0.0.3")
    # The talosconfig `pulumi up` writes: endpoints = the Elastic IP, nodes = the private IP.
    ok(node.talosctl_run("-e", pub, "-n", priv, "version"))
    # `-n EIP`: apid proxies the call to its own Elastic IP and cannot reach it; the error names the node (the
    # multierror shape of tests/golden/talosctl/service-etcd-forward-unreachable-node.txt).
    r = fails(node.talosctl_run("-e", pub, "-n", pub, "service", "etcd"), "1 error occurred:",
              f"* {pub}: rpc error: code = Unavailable", f"dial tcp {pub}:50000: i/o timeout")
    assert r.stderr.strip() == golden(node, "service-etcd-forward-unreachable-node.txt").strip()
    # The private IP is not routed to the operator's machine.
    fails(node.talosctl_run("-e", priv, "-n", priv, "version"), f"dial tcp {priv}:50000: i/o timeout")
    # --insecure dials --nodes and ignores --endpoints (WithClientMaintenance): a configured node wants a cert.
    fails(node.talosctl_run("-n", pub, "-e", "10.9.9.9", "version", "--insecure"), "certificate required")
    fails(node.talosctl_run("-n", priv, "version", "--insecure"), "i/o timeout")
    # health wants the etcd members among the control plane nodes: etcd advertises the private IP only.
    fails(node.talosctl_run("health", "--wait-timeout", "1s", "--control-plane-nodes", pub),
          "not subset of control plane node ips")
    ok(node.talosctl_run("health", "--wait-timeout", "10s", "--control-plane-nodes", priv))


def test_booting_until_etcd_is_up_and_recovery_is_checked_on_the_node(node, tmp_path):
    snap = tmp_path / "snap.db"
    ok(node.talosctl_run("etcd", "snapshot", str(snap)))
    assert stage(node) == "running" and etcd(node).state == "Running" and etcd(node).health == "OK"
    ok(node.talosctl_run("reset", "--graceful=false", "--reboot", "--system-labels-to-wipe=EPHEMERAL",
                         "--wait=false"))
    settle_after_reset(node)
    # Waiting for bootstrap: stage booting (the boot sequence waits for etcd), etcd Preparing in its pre-start.
    assert stage(node) == "booting"
    svc = etcd(node)
    assert (svc.state, svc.health, svc.last_message) == ("Preparing", "?", "Running pre state")
    assert [e.message for e in svc.events][-1] == "Starting service"

    # A snapshot whose SHA-256 trailer does not match keeps a readable bbolt database: talosctl's local status
    # check passes, the node accepts the upload and the bootstrap, and refuses it later, in etcd's pre-start.
    bad = tmp_path / "bad.db"
    data = bytearray(snap.read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    wait_for(lambda: node.talosctl_run("bootstrap", f"--recover-from={bad}").returncode == 0)
    wait_for(lambda: etcd(node).state == "Failed")
    svc = etcd(node)
    assert svc.last_message.startswith("Failed to run pre stage: error recovering from the snapshot: expected sha256 [")
    # The bootstrap released the boot sequence: the stage reads running although etcd failed (CONFORMANCE.md).
    assert stage(node) == "running"
    # The failed restore left files in etcd's data directory: bootstrapping again is refused until a reset.
    fails(node.talosctl_run("bootstrap", f"--recover-from={snap}"), "code = AlreadyExists",
          "etcd data directory is not empty")

    ok(node.talosctl_run("reset", "--graceful=false", "--reboot", "--system-labels-to-wipe=EPHEMERAL",
                         "--wait=false"))
    settle_after_reset(node)
    wait_for(lambda: node.talosctl_run("bootstrap", f"--recover-from={snap}").returncode == 0)
    # Right after the call the node shows a fresh etcd runner, not yet running (the start is asynchronous).
    assert etcd(node).state in ("Preparing", "Running")
    wait_for(lambda: etcd(node).state == "Running")
    assert stage(node) == "running"


def test_a_crash_looping_etcd_shows_waiting_with_health_fail(node):
    node.set_faults(etcd_fails="exit code 1")
    svc = etcd(node)
    assert (svc.state, svc.health) == ("Waiting", "Fail")
    assert "going to restart forever" in svc.last_message
    out = ok(node.talosctl_run("service", "etcd")).stdout
    assert "LAST HEALTH MESSAGE   service not running" in out  # the golden crash-loop layout
    node.clear_faults()
    wait_for(lambda: etcd(node).state == "Running")


def test_apply_config_in_maintenance_does_not_reboot(node):
    pub = node.public_ip
    ok(node.talosctl_run("reset", "--graceful=false", "--reboot", "--system-labels-to-wipe=STATE",
                         "--system-labels-to-wipe=EPHEMERAL", "--wait=false"))
    wait_for(lambda: node.node_stage() == "maintenance")
    fails(node.talosctl_run("service", "etcd"), "x509: certificate signed by unknown authority")
    r = ok(node.talosctl_run("-n", pub, "apply-config", "--insecure", "--file", str(node.controlplane_config)))
    assert r.stderr.strip() == transcript("apply-config-insecure-maintenance.txt").strip()
    assert node.node_stage() == "booting"  # no reboot: the boot sequence goes on, configured
    wait_for(lambda: node.node_view().etcd_waiting)


def test_etcd_snapshot_with_etcd_down_hangs_until_cancelled(node, tmp_path):
    node.set_faults(etcd_fails="exit code 1")
    proc = subprocess.Popen([str(node.talosctl), "etcd", "snapshot", str(tmp_path / "s.db")], env=node.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    assert proc.poll() is None  # no error, no data: machined's etcd client waits for etcd with no deadline
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert err.strip().splitlines() == transcript("etcd-snapshot-etcd-down.txt").strip().splitlines()
    assert not list(tmp_path.glob("s.db*"))
