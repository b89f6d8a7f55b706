"""The Talos API client against the simulated apid (mutual TLS, real etcd behind it)."""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import pytest

from dr.adapters.talosapi import TalosClient, TalosCredentials
from dr.adapters.talosapi import messages as m
from dr.core.credentials import new_ca
from dr.core.errors import ConfigError, NodeError, NodeUnreachable, TruncatedSnapshot
from dr.core.integrity import verify_file
from tests.support.talos_api import KEYS
from tests.support.tools import free_port


@pytest.fixture(params=["openssl", "grpcio"], ids=["h2-vs-ed25519-apid", "h2-vs-grpcio-apid"])
def apid(request, apid_server, grpc_apid_server):
    """The h2 client's two servers: a Talos-like Ed25519 apid (OpenSSL + h2), and grpcio's own gRPC server (ECDSA
    key), the independent implementation the hand-written client is checked against (interop)."""
    server = apid_server if request.param == "openssl" else grpc_apid_server
    server.fault = None
    yield server
    server.fault = None


def _client(apid, creds, **kw) -> TalosClient:
    return TalosClient(apid.host, creds, port=apid.port, timeout=30, **kw)


def test_messages_match_talos_wire_format():
    # common.Data{metadata=1, bytes=2}, Metadata{hostname=1, error=2}: bytes hand-checked against the proto field numbers
    wire = m.Data(metadata=m.Metadata(hostname="n", error="x"), bytes=b"abc").SerializeToString()
    assert wire == b"\n\x06\n\x01n\x12\x01x\x12\x03abc"
    assert m.EtcdSnapshotRequest().SerializeToString() == b""


@pytest.mark.parametrize("role", ["os:etcd:backup", "os:admin", "os:operator"])
def test_snapshot_streams_the_etcd_snapshot_for_allowed_roles(apid, make_creds, role, tmp_path):
    out = tmp_path / "snap.db"
    with _client(apid, make_creds(role)) as c, open(out, "wb") as f:
        res = c.etcd_snapshot(f)
    served = apid.last_snapshot.read_bytes()
    assert out.read_bytes() == served  # byte for byte what `etcdctl snapshot save` produced on the node
    assert res.digest.size == len(served) and res.digest == verify_file(out)
    assert apid.calls[-1] == (role, "ok")
    if role == "os:etcd:backup":
        # and it restores to the keys the node's etcd holds
        data = tmp_path / "restored"
        subprocess.run(["etcdctl", "snapshot", "restore", str(out), "--data-dir", str(data)], check=True,
                       capture_output=True, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
        assert (data / "member" / "snap" / "db").stat().st_size > 0


def test_snapshot_is_streamed_in_chunks_not_buffered(apid, make_creds):
    sizes = []
    with _client(apid, make_creds()) as c:
        c.etcd_snapshot(lambda b: sizes.append(len(b)))
    assert len(sizes) >= 1 and max(sizes) <= 64 * 1024
    assert sum(sizes) == apid.last_snapshot.stat().st_size


def test_reader_role_is_refused_with_a_role_hint(apid, make_creds):
    with _client(apid, make_creds("os:reader")) as c, pytest.raises(NodeError) as ei:
        c.etcd_snapshot(io.BytesIO())
    assert "os:etcd:backup" in str(ei.value) and "PERMISSION" not in ei.value.hint
    assert "not authorized" in ei.value.message
    assert apid.calls[-1] == ("os:reader", "denied")


def test_client_certificate_from_another_ca_is_refused(apid, make_creds):
    other = new_ca("not-this-cluster")
    with _client(apid, make_creds(ca=other)) as c, pytest.raises(NodeUnreachable) as ei:
        c.etcd_snapshot(io.BytesIO())
    assert "TLS handshake" in ei.value.message and "OS CA" in ei.value.hint


def test_node_certificate_not_signed_by_trusted_ca_is_refused(apid, make_creds):
    other = new_ca("impostor")
    with _client(apid, make_creds(trust=other)) as c, pytest.raises(NodeUnreachable) as ei:
        c.etcd_snapshot(io.BytesIO())
    assert "TLS handshake" in ei.value.message and "CA" in ei.value.hint


def test_expired_client_certificate_fails_before_dialing(apid, make_creds):
    with pytest.raises(ConfigError) as ei:
        _client(apid, make_creds(expired=True))
    assert "expired on" in ei.value.message and "pulumi up" in ei.value.hint


def test_expired_client_certificate_is_refused_by_the_node(apid, make_creds, monkeypatch):
    # Without the local courtesy check the node's TLS stack refuses it: still a clear TLS error, never a hang.
    monkeypatch.setattr("dr.adapters.talosapi.client.check_client_certificate", lambda pem, now=None: None)
    with _client(apid, make_creds(expired=True)) as c, pytest.raises(NodeUnreachable) as ei:
        c.etcd_snapshot(io.BytesIO())
    assert "TLS handshake" in ei.value.message


@pytest.mark.parametrize("fault", ["cut", "truncate"])
def test_stream_cut_midway_is_an_error(apid, make_creds, fault):
    apid.fault, apid.fault_after = fault, 8192
    got = []
    with _client(apid, make_creds()) as c, pytest.raises(TruncatedSnapshot) as ei:
        c.etcd_snapshot(got.append)
    assert sum(map(len, got)) <= 8192 < apid.last_snapshot.stat().st_size
    assert "truncated" in ei.value.message or "cut after" in ei.value.message


def test_corrupt_stream_fails_the_trailer_check(apid, make_creds):
    from dr.core.errors import CorruptSnapshot

    apid.fault = "corrupt"
    with _client(apid, make_creds()) as c, pytest.raises(CorruptSnapshot):
        c.etcd_snapshot(io.BytesIO())


def test_node_reported_error_is_a_node_error(apid, make_creds):
    apid.fault = "error"
    with _client(apid, make_creds()) as c, pytest.raises(NodeError) as ei:
        c.etcd_snapshot(io.BytesIO())
    assert "simulated" in ei.value.message and "talos-sandbox" in ei.value.message


def test_node_down_is_unreachable(make_creds):
    port = free_port()
    with TalosClient("127.0.0.1", make_creds(), port=port, timeout=10) as c, pytest.raises(NodeUnreachable) as ei:
        c.etcd_snapshot(io.BytesIO())
    assert f"127.0.0.1:{port}" in ei.value.message and "50000" in ei.value.hint


def test_credentials_json_round_trip_and_base64_form(make_creds):
    import base64
    import json

    creds = make_creds()
    assert TalosCredentials.from_json(creds.to_json()) == creds
    b64 = json.dumps({k: base64.b64encode(v).decode() for k, v in
                      {"ca": creds.ca_pem, "crt": creds.cert_pem, "key": creds.key_pem}.items()})
    assert TalosCredentials.from_json(b64) == creds
    with pytest.raises(ConfigError):
        TalosCredentials.from_json('{"ca": "x"}')


def test_snapshot_holds_the_node_keys(apid, make_creds, tmp_path):
    out = tmp_path / "s.db"
    with _client(apid, make_creds()) as c, open(out, "wb") as f:
        c.etcd_snapshot(f)
    strings = Path(out).read_bytes()
    for k in KEYS:
        assert k.encode() in strings


def test_expired_node_certificate_is_named(os_ca, make_creds):
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives.asymmetric import ed25519

    from dr.core.credentials import issue_certificate
    from sandbox.apid import SimulatedApid

    now = datetime.now(UTC)
    expired = issue_certificate(*os_ca, organization=None, common_name="n", not_before=now - timedelta(days=400),
                                not_after=now - timedelta(days=35), key=ed25519.Ed25519PrivateKey.generate(),
                                server_ips=("127.0.0.2",), client=False)  # the node's private IP, which the Lambda dials
    with SimulatedApid("http://127.0.0.1:9", *os_ca, server_cert=expired) as a:
        with TalosClient(a.host, make_creds(), port=a.port, timeout=10) as c, pytest.raises(NodeUnreachable) as ei:
            c.etcd_snapshot(io.BytesIO())
    assert "certificate has expired" in ei.value.message and "expired" in ei.value.hint
    assert a.calls == []  # nothing was served


def test_nodes_metadata_routes_the_call_as_talosctl_names_its_node(apid_server, make_creds):
    # talosctl's WithClient sends `nodes: <node>` (pkg/machinery/client/context.go WithNodes); apid serves its own
    # address and forwards any other, which the simulated apid reports as a failed dial.
    with TalosClient(apid_server.host, make_creds(), port=apid_server.port, timeout=30,
                     nodes=[apid_server.host]) as c:
        digests: list = []
        assert sum(len(b) for b in c.iter_etcd_snapshot(digests)) == digests[0].size
    assert apid_server.calls[-1][1] == "ok"
    with TalosClient(apid_server.host, make_creds(), port=apid_server.port, timeout=30, nodes=["10.9.9.9"]) as c, \
            pytest.raises(NodeUnreachable, match="dial tcp 10.9.9.9:50000"):
        c.etcd_snapshot(io.BytesIO())
    assert apid_server.calls[-1][1] == "forward-failed"
    assert c.node.startswith("10.9.9.9 (via ")


def test_no_nodes_metadata_without_nodes(apid_server, make_creds):
    # The Lambda dials the node itself and sends no `nodes` (served locally: director.go default branch).
    with TalosClient(apid_server.host, make_creds(), port=apid_server.port, timeout=30) as c:
        c.etcd_snapshot(io.BytesIO())
    assert apid_server.calls[-1][1] == "ok" and c.node == f"{apid_server.host}:{apid_server.port}"


def test_metadata_names_must_be_grpc_metadata():
    from dr.adapters.talosapi import h2stream

    for bad in ("Nodes", ":path", "grpc-timeout"):
        with pytest.raises(ValueError):
            next(h2stream.unary_stream("127.0.0.1", 1, "/x", b"", None, timeout=1,  # type: ignore[arg-type]
                                       metadata=[(bad, "v")]))


def test_a_stream_that_never_starts_is_reported_as_etcd_not_answering(make_creds, os_ca, tmp_path):
    # A TLS + HTTP/2 server that accepts the call and sends nothing, as machined does while etcd is down.
    from sandbox.apid import SimulatedApid, _Hang

    class Hanging(SimulatedApid):
        def _serve(self, roles, nodes=None):
            raise _Hang()
            yield  # a generator, like the real one

    with Hanging("http://127.0.0.1:1", *os_ca) as hang:
        t0 = time.monotonic()
        with TalosClient(hang.host, make_creds(), port=hang.port, timeout=30, idle_timeout=1.0) as c, \
                pytest.raises(NodeError, match="not answering"):
            c.etcd_snapshot(io.BytesIO())
        assert 0.9 < time.monotonic() - t0 < 10


def test_the_fast_cut_of_1k_messages_decodes_as_protobuf_does(make_creds, monkeypatch):
    import os as _os

    from dr.adapters.talosapi import h2stream
    from sandbox.apid import frame_data, metadata_field

    a, b, c = _os.urandom(1024), _os.urandom(1024), _os.urandom(100)
    wire = [
        m.Data(bytes=a).SerializeToString(),
        frame_data(b, metadata_field("node-1"))[5:],  # apid's AppendInfo: metadata after the bytes
        frame_data(b, metadata_field("node-1"))[5:],
        frame_data(a, b"\x12\x03xyz")[5:],  # a second `bytes` field: protobuf keeps the last one
        m.Data(bytes=c, metadata=m.Metadata(hostname="node-1")).SerializeToString(),
    ]
    monkeypatch.setattr(h2stream, "unary_stream", lambda *a, **k: (x for x in wire))
    got = list(TalosClient("127.0.0.1", make_creds(), port=1)._stream("/x", m.EtcdSnapshotRequest()))
    for raw, (data, md) in zip(wire, got, strict=True):
        want = m.Data.FromString(raw)
        assert data == want.bytes
        assert (md.hostname if md is not None else None) == (want.metadata.hostname if want.HasField("metadata")
                                                             else None)


def test_forwarded_metadata_is_checked_whenever_it_changes(make_creds, monkeypatch):
    # iter_etcd_snapshot takes a forwarded 1 KiB message whose appended metadata equals one already checked without
    # decoding it; metadata that differs (here: an error from the node) is decoded and checked again.
    import os as _os

    from dr.adapters.talosapi import h2stream
    from sandbox.apid import frame_data, metadata_field

    ok = metadata_field("node-1")
    bad = m.Data(metadata=m.Metadata(hostname="node-1", error="etcd went away")).SerializeToString()
    a, b = _os.urandom(1024), _os.urandom(1024)
    batches = [[frame_data(a, ok)[5:], frame_data(b, ok)[5:]], [frame_data(a, ok)[5:], frame_data(b, bad)[5:]]]
    monkeypatch.setattr(h2stream, "unary_stream_batches", lambda *a, **k: (x for x in batches))
    client = TalosClient("127.0.0.1", make_creds(), port=1, nodes=["node-1"])
    with pytest.raises(NodeError, match="etcd went away"):
        list(client.iter_etcd_snapshot())
    assert client.hostname == "node-1"
