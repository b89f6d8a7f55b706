"""The node's apid on the Elastic IP (sandbox/node_apid.py): started by up, stopped by down, answering as the node
does in each state, and as the sandbox's talosctl does for `etcd snapshot` (sandbox/CONFORMANCE.md)."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from dr.adapters.talosapi import TalosClient
from dr.adapters.talosctl import load_talosconfig, talosconfig_credentials
from dr.core.errors import NodeError, NodeUnreachable
from dr.core.integrity import SnapshotDigest
from sandbox import node_apid, procs
from sandbox.api import Sandbox
from sandbox.layout import APID_PORT

pytestmark = pytest.mark.slow  # sandboxes, resets and reboots


def client(sb: Sandbox, *, talosconfig=None, nodes=None, idle: float = 2.0) -> TalosClient:
    creds = talosconfig_credentials(load_talosconfig(talosconfig or sb.talosconfig))
    return TalosClient(sb.public_ip, creds, port=sb.info.apid_port, nodes=[sb.private_ip] if nodes is None else nodes,
                       timeout=60, idle_timeout=idle)


def snapshot(c: TalosClient) -> SnapshotDigest:
    digests: list[SnapshotDigest] = []
    for _ in c.iter_etcd_snapshot(digests):
        pass
    return digests[0]


def talosctl_snapshot(sb: Sandbox, tmp_path, timeout: float = 3) -> subprocess.CompletedProcess[str] | None:
    """The sandbox talosctl's `etcd snapshot`; None when it hangs (it is then stopped)."""
    try:
        return sb.talosctl_run("etcd", "snapshot", str(tmp_path / "t.db"), timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def test_up_serves_the_api_on_the_elastic_ip_and_down_stops_it(sandbox_factory, tmp_path):
    sb = sandbox_factory(with_s3=False)
    st = sb.status()["apid"]
    assert st["alive"] and st["endpoint"] == f"{sb.public_ip}:{sb.info.apid_port}"
    # The talosconfig's CA verifies the node's certificate (for the Elastic IP); the stream is the real etcd's.
    c = client(sb)
    d = snapshot(c)
    assert d.size > 1000 and c.hostname == sb.private_ip  # forwarded frames name the node given in `nodes`
    r = talosctl_snapshot(sb, tmp_path, timeout=30)
    assert r is not None and r.returncode == 0, r
    assert (tmp_path / "t.db").stat().st_size == d.size
    pid = sb.info.apid_pid
    assert procs.alive(pid, node_apid.MARKER)
    assert any(s.startswith("apid (pid") for s in sb.down())
    assert not procs.alive(pid)
    with pytest.raises(OSError):
        socket.create_connection((sb.public_ip, sb.info.apid_port), timeout=2).close()


def test_a_second_sandbox_at_once_gets_its_own_port(sandbox_factory):
    one = sandbox_factory("one", with_s3=False)
    two = sandbox_factory("two", with_s3=False)
    assert one.info.apid_port != two.info.apid_port
    for sb in (one, two):
        endpoint = load_talosconfig(sb.talosconfig).endpoints[0]
        want = sb.public_ip if sb.info.apid_port == APID_PORT else f"{sb.public_ip}:{sb.info.apid_port}"
        assert endpoint == want  # talosctl reads host:port endpoints (client/connection.go EnsureEndpointsHavePorts)
        assert snapshot(client(sb)).size > 1000


def test_refusals_and_the_hang_match_the_node_and_talosctl(sandbox_factory, tmp_path):
    sb = sandbox_factory(with_s3=False, reboot_seconds=0.5)

    # A node that is down: nothing serves the address (talosctl: connection refused).
    sb.set_faults(unreachable=True)
    with pytest.raises(NodeUnreachable, match="reset at once"):
        snapshot(client(sb))
    r = talosctl_snapshot(sb, tmp_path)
    assert r is not None and "connection refused" in r.stderr
    sb.clear_faults()

    # etcd down: the call is accepted, then nothing comes until the client gives up (talosctl hangs too).
    sb.set_faults(etcd_fails="corrupt data")
    t0 = time.monotonic()
    with pytest.raises(NodeError, match="not answering"):
        snapshot(client(sb, idle=1.0))
    assert 0.9 < time.monotonic() - t0 < 10
    assert talosctl_snapshot(sb, tmp_path, timeout=2) is None
    sb.clear_faults()

    # A role that may not snapshot; a `nodes` the node cannot forward to (its own Elastic IP).
    reader = sb.issue_talosconfig(tmp_path / "reader", ["os:reader"])
    with pytest.raises(NodeError, match="not authorized"):
        snapshot(client(sb, talosconfig=reader))
    with pytest.raises(NodeUnreachable, match=f"dial tcp {sb.public_ip}:50000"):
        snapshot(client(sb, nodes=[sb.public_ip]))

    # Booting, etcd waiting for a bootstrap (EPHEMERAL wiped): reachable, authenticated, and the snapshot hangs.
    r = sb.talosctl_run("reset", "--graceful=false", "--reboot", "--system-labels-to-wipe=EPHEMERAL")
    assert r.returncode == 0, r.stderr
    sb.wait_stage("booting", timeout=20)
    time.sleep(0.6)  # past the reboot's end: the node is settled in booting
    with pytest.raises(NodeError, match="not answering"):
        snapshot(client(sb, idle=1.0))
    assert talosctl_snapshot(sb, tmp_path, timeout=2) is None

    # Maintenance mode (STATE wiped): a self-signed certificate the talosconfig's CA does not verify.
    r = sb.talosctl_run("reset", "--graceful=false", "--reboot", "--system-labels-to-wipe=STATE")
    assert r.returncode == 0, r.stderr
    sb.wait_stage("maintenance", timeout=20)
    with pytest.raises(NodeUnreachable, match="certificate") as ei:
        snapshot(client(sb))
    assert "verify" in ei.value.message
    r = talosctl_snapshot(sb, tmp_path)
    assert r is not None and "certificate signed by unknown authority" in r.stderr
