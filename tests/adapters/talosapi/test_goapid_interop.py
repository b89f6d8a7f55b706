"""The Talos API client against a grpc-go server (sandbox/goapid/main.go): the stack a real apid runs.

The sandbox's Python apid packs many 1 KiB messages into each HTTP/2 DATA frame; grpc-go writes every message as a
DATA frame of its own (grpc-go v1.33.3, the version Debian ships: internal/transport/controlbuf.go:830-935 processData
takes one queued dataFrame per message and writes it in frames of at most http2MaxFrameLen = 16384 bytes,
internal/transport/http_util.go:47; http2_server.go:910-947 queues one dataFrame per SendMsg), and applies its own
flow control, settings, trailers and cancellation. These tests run the client against that. They fail, never skip,
when the stand-in is not built (`bash scripts/ensure-go-grpc.sh`; `make test` runs it).
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dr.adapters.talosapi import TalosClient, TalosCredentials, h2stream
from dr.core.credentials import issue_certificate, new_ca
from dr.core.errors import NodeError, NodeUnreachable, TruncatedSnapshot
from dr.core.integrity import verify_file
from sandbox import goapid
from sandbox.goapid import GoApid


@pytest.fixture(scope="module")
def built():
    try:
        return goapid.binary()
    except goapid.GoApidMissing as exc:
        pytest.fail(str(exc))  # a missing stand-in is a failure: `make test` builds it


@pytest.fixture
def serve(built, os_ca, sched_etcd):
    """Start a stand-in with the given options (the session's OS CA, the session's real etcd); stopped afterwards."""
    started: list[GoApid] = []

    def start(**kw) -> GoApid:
        kw.setdefault("etcd_endpoint", sched_etcd.endpoint)
        g = GoApid(*os_ca, **kw).start()
        started.append(g)
        return g

    yield start
    for g in started:
        g.stop()


@pytest.fixture(scope="module")
def etcd_head(sched_etcd, tmp_path_factory) -> bytes:
    """A real etcd snapshot of the session's etcd, its trailer removed: the start of the synthetic snapshots."""
    path = tmp_path_factory.mktemp("etcd-head") / "snap.db"
    subprocess.run(["etcdctl", f"--endpoints={sched_etcd.endpoint}", "snapshot", "save", str(path)], check=True,
                   capture_output=True, env={**os.environ, "ETCDCTL_API": "3"})
    return path.read_bytes()[:-32]


def synthetic(path: Path, size: int, head: bytes) -> Path:
    """A file shaped as etcd's snapshot API sends it (bbolt pages, then the SHA-256 of all before it): a real
    snapshot's pages cut or padded with random bytes to ``size`` - 32 bytes. Large streams without a large etcd."""
    body = bytearray(head[: size - 32]) + os.urandom(max(0, size - 32 - len(head)))
    if len(body) < 20:
        raise ValueError("too small for a bbolt header")
    struct.pack_into("<I", body, 16, 0xED0CDAED)  # bbolt's magic in the first meta page
    path.write_bytes(bytes(body) + hashlib.sha256(body).digest())
    return path


def _client(g: GoApid, creds: TalosCredentials, **kw) -> TalosClient:
    kw.setdefault("timeout", 60)
    return TalosClient(g.host, creds, port=g.port, **kw)


def _wait_calls(g: GoApid, n: int = 1, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        calls = g.calls()
        if len(calls) >= n:
            return calls
        time.sleep(0.05)
    raise AssertionError(f"the stand-in logged {len(g.calls())} calls, expected {n}")


class _FrameCounter:
    """Counts the HTTP/2 DATA frames the client receives: those it cuts itself (``_Call.take``, ``_Call.take_run``)
    and any h2 parses (``DataReceived`` events)."""

    def __init__(self, monkeypatch):
        self.frames = 0
        take, take_run, handle = h2stream._Call.take, h2stream._Call.take_run, h2stream._Call.handle
        counter = self

        def counted_run(call, data, pos, stride, end_of_data, out):
            last = take_run(call, data, pos, stride, end_of_data, out)
            counter.frames += (last - pos) // stride
            return last

        def counted_take(call, data, start, end, out):
            counter.frames += 1
            return take(call, data, start, end, out)

        def counted_handle(call, ev):
            if isinstance(ev, h2stream.h2.events.DataReceived):
                counter.frames += 1
            return handle(call, ev)

        monkeypatch.setattr(h2stream._Call, "take", counted_take)
        monkeypatch.setattr(h2stream._Call, "take_run", counted_run)
        monkeypatch.setattr(h2stream._Call, "handle", counted_handle)


@pytest.mark.parametrize("size", [544, 2080, 1024 * 1024 + 32, 9 * 1024 * 1024 + 32],
                         ids=["one-short-message", "three-messages", "1MiB", "9MiB"])
def test_streams_of_several_sizes_arrive_whole_in_one_frame_per_message(serve, make_creds, etcd_head, tmp_path, size,
                                                                         monkeypatch):
    snap = synthetic(tmp_path / "served.db", size, etcd_head)
    g = serve(snapshot_file=snap)
    frames = _FrameCounter(monkeypatch)
    out = tmp_path / "got.db"
    with _client(g, make_creds()) as c, open(out, "wb") as f:
        res = c.etcd_snapshot(f)
    assert out.read_bytes() == snap.read_bytes()  # byte for byte, sha256 trailer included
    assert res.digest == verify_file(out) and res.digest.size == size
    [call] = _wait_calls(g)
    messages = -(-size // 1024)
    assert call["outcome"] == "ok" and call["bytes"] == size and call["frames"] == messages
    # grpc-go writes each 1 KiB message in a DATA frame of its own (about a million per GiB): the client saw at least
    # one frame per message; a split by the flow-control window adds a few, never fewer.
    assert messages <= frames.frames <= messages + messages // 50 + 2


def test_a_real_etcd_snapshot_through_grpc_go_restores(serve, make_creds, tmp_path):
    g = serve()
    out = tmp_path / "snap.db"
    with _client(g, make_creds("os:etcd:backup")) as c, open(out, "wb") as f:
        res = c.etcd_snapshot(f)
    assert res.digest == verify_file(out)
    assert res.hostname == g.host  # machined sets no metadata: the name stays the address dialed
    data = tmp_path / "restored"
    subprocess.run(["etcdctl", "snapshot", "restore", str(out), "--data-dir", str(data)], check=True,
                   capture_output=True, env={**os.environ, "ETCDCTL_API": "3"})
    assert (data / "member" / "snap" / "db").stat().st_size > 0
    assert _wait_calls(g)[0]["outcome"] == "ok"


def test_a_forwarded_call_carries_the_target_on_every_message(serve, make_creds, etcd_head, tmp_path):
    snap = synthetic(tmp_path / "served.db", 64 * 1024 + 32, etcd_head)
    g = serve(snapshot_file=snap, local=("10.0.1.10",))
    got = io.BytesIO()
    with _client(g, make_creds(), nodes=["10.0.1.10"]) as c:
        res = c.etcd_snapshot(got)
    assert got.getvalue() == snap.read_bytes() and res.hostname == "10.0.1.10"
    assert _wait_calls(g)[0]["nodes"] == "10.0.1.10"


def test_a_forward_that_fails_is_unavailable_with_grpc_message(serve, make_creds):
    g = serve(local=("10.0.1.10",))
    with _client(g, make_creds(), nodes=["203.0.113.9"]) as c, pytest.raises(NodeUnreachable) as ei:
        c.etcd_snapshot(io.BytesIO())
    assert "dial tcp 203.0.113.9:50000: i/o timeout" in ei.value.message  # grpc-message, percent-decoded
    assert _wait_calls(g)[0]["outcome"] == "forward-failed"


def test_a_role_without_etcd_snapshot_gets_permission_denied(serve, make_creds):
    g = serve()
    with _client(g, make_creds("os:reader")) as c, pytest.raises(NodeError) as ei:
        c.etcd_snapshot(io.BytesIO())
    # grpc-go's trailers-only response: grpc-status 7, grpc-message "not authorized" (authz/authorizer.go:18)
    assert "not authorized" in ei.value.message and "os:etcd:backup" in ei.value.hint
    assert _wait_calls(g)[0] == {**_wait_calls(g)[0], "roles": "os:reader", "outcome": "denied"}


def test_a_client_certificate_with_server_auth_too_is_refused_in_the_handshake(serve, make_creds, os_ca):
    g = serve()
    now = datetime.now(UTC)
    # server_ips adds serverAuth to the EKU: apid's verifyExtKeyUsage demands exactly [clientAuth]
    cert, key = issue_certificate(*os_ca, organization="os:admin", common_name="both", not_before=now - timedelta(hours=1),
                                  not_after=now + timedelta(days=1), server_ips=("127.0.0.1",))
    creds = TalosCredentials(ca_pem=os_ca[0], cert_pem=cert, key_pem=key)
    with _client(g, creds) as c, pytest.raises(NodeUnreachable) as ei:
        c.etcd_snapshot(io.BytesIO())
    assert "TLS" in ei.value.message
    assert g.calls() == []  # refused before any call


def test_a_client_certificate_from_another_ca_is_refused(serve, make_creds):
    g = serve()
    with _client(g, make_creds(ca=new_ca("other-cluster"))) as c, pytest.raises(NodeUnreachable) as ei:
        c.etcd_snapshot(io.BytesIO())
    assert "TLS" in ei.value.message and "OS CA" in ei.value.hint


def test_an_etcd_failure_arrives_as_unavailable_with_its_text(serve, make_creds):
    # An etcd that answers with an error (etcd down instead makes machined wait: the hang test below). grpc-message
    # is percent-encoded by grpc-go and decoded by the client: the text arrives as etcd wrote it.
    g = serve(fail="etcdserver: leader changed (100% sure)")
    with _client(g, make_creds()) as c, pytest.raises(NodeUnreachable) as ei:
        c.etcd_snapshot(io.BytesIO())
    assert "failed reading etcd snapshot: etcdserver: leader changed (100% sure)" in ei.value.message
    assert _wait_calls(g)[0]["outcome"] == "etcd-failed"


def test_flow_control_holds_the_server_while_the_reader_is_slow(serve, make_creds, etcd_head, tmp_path):
    size = 24 * 1024 * 1024 + 32  # several times the client's 4 MiB stream and connection windows
    snap = synthetic(tmp_path / "served.db", size, etcd_head)
    g = serve(snapshot_file=snap)
    h = hashlib.sha256()
    with _client(g, make_creds()) as c:
        it = c.iter_etcd_snapshot()
        h.update(next(it))
        time.sleep(1.5)  # a slow consumer: grpc-go must wait for WINDOW_UPDATEs, not finish into buffers
        assert g.calls() == []  # the server is still sending (blocked on flow control)
        for chunk in it:
            h.update(chunk)
    assert h.digest() == hashlib.sha256(snap.read_bytes()).digest()
    assert _wait_calls(g)[0]["bytes"] == size


def test_closing_early_cancels_the_call_on_the_server(serve, make_creds, etcd_head, tmp_path):
    snap = synthetic(tmp_path / "served.db", 24 * 1024 * 1024 + 32, etcd_head)
    g = serve(snapshot_file=snap)
    with _client(g, make_creds()) as c:
        it = c.iter_etcd_snapshot()
        next(it)
        it.close()  # RST_STREAM(CANCEL) and the connection closed
    [call] = _wait_calls(g)
    assert call["outcome"] == "canceled" and "context canceled" in call["err"]  # the server's stream context ended
    assert 0 < call["bytes"] < snap.stat().st_size


def test_a_stall_mid_stream_trips_the_idle_timeout(serve, make_creds, etcd_head, tmp_path):
    snap = synthetic(tmp_path / "served.db", 1024 * 1024 + 32, etcd_head)
    g = serve(snapshot_file=snap, stall_after=256 * 1024)
    got = []
    t0 = time.monotonic()
    with _client(g, make_creds(), idle_timeout=1.0) as c, pytest.raises(TruncatedSnapshot) as ei:
        c.etcd_snapshot(got.append)
    assert 0.9 < time.monotonic() - t0 < 15
    assert "stalled after 262144 bytes" in ei.value.message and "no data for 1s" in ei.value.message
    assert sum(map(len, got)) <= 256 * 1024
    [call] = _wait_calls(g)
    assert call["outcome"] == "canceled"  # the client's giving up reached the server


def test_a_call_that_never_starts_is_etcd_not_answering(serve, make_creds):
    g = serve(hang=True)  # machined while etcd is down: the call is accepted, nothing is sent
    t0 = time.monotonic()
    with _client(g, make_creds(), idle_timeout=1.0) as c, pytest.raises(NodeError, match="not answering"):
        c.etcd_snapshot(io.BytesIO())
    assert 0.9 < time.monotonic() - t0 < 15
    assert _wait_calls(g)[0]["outcome"] == "canceled"


def test_the_stand_in_is_missing_is_a_failure_not_a_skip(monkeypatch, tmp_path):
    monkeypatch.setenv("DR_GOAPID_BIN", str(tmp_path / "nothing"))
    with pytest.raises(goapid.GoApidMissing, match="ensure-go-grpc.sh"):
        goapid.binary()


def test_the_sandbox_runs_the_grpc_go_apid_on_request(built, sandbox_factory):
    # `python -m sandbox up --apid go`: the node's apid on the Elastic IP is the grpc-go stand-in, reached with the
    # sandbox's own talosconfig (its CA, its admin certificate) as talosctl names the node (`nodes` = private IP).
    from dr.adapters.talosctl import load_talosconfig, talosconfig_credentials
    from sandbox import node_apid, procs

    sb = sandbox_factory(with_s3=False, apid="go")
    pid = sb.info.apid_pid
    assert Path(f"/proc/{pid}/exe").resolve() == built.resolve()
    creds = talosconfig_credentials(load_talosconfig(sb.talosconfig))
    got = io.BytesIO()
    with TalosClient(sb.public_ip, creds, port=sb.info.apid_port, nodes=[sb.private_ip], timeout=60) as c:
        res = c.etcd_snapshot(got)
    assert res.digest.size == len(got.getvalue()) > 1000 and res.hostname == sb.private_ip
    log = (sb.dir / "logs" / "apid.log").read_text()
    assert "outcome=ok" in log and f"nodes={sb.private_ip}" in log
    # The node's snapshot throttle (the bench's slow link) applies to this apid too, read at each call.
    sb.set_faults(snapshot_throttle_bytes_per_second=100_000)
    t0 = time.monotonic()
    with TalosClient(sb.public_ip, creds, port=sb.info.apid_port, nodes=[sb.private_ip], timeout=60) as c:
        size = c.etcd_snapshot(io.BytesIO()).digest.size
    assert time.monotonic() - t0 >= 0.8 * size / 100_000
    assert any(s.startswith("apid (pid") for s in sb.down())
    assert not procs.alive(pid, node_apid.MARKER)
