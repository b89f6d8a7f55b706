"""The Talos API client against a node that misbehaves at the protocol level: a tiny TLS +
HTTP/2 server per test, scripted to send what a real apid never would."""

from __future__ import annotations

import io
import socket
import ssl
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from hyperframe.frame import PushPromiseFrame

from dr.adapters.talosapi import TalosClient, h2stream
from dr.adapters.talosapi import messages as m
from dr.core.credentials import issue_certificate
from dr.core.errors import DRError, NodeError, NodeUnreachable

Respond = Callable[[h2.connection.H2Connection, int, socket.socket], None]


def _grpc(msg: bytes) -> bytes:
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


class HostileApid:
    """Serves each connection once: TLS (a certificate from the test OS CA, ``alpn`` offered), HTTP/2, and on the
    first request ``respond(conn, stream_id, sock)`` decides what goes back. Records the client's SETTINGS."""

    def __init__(self, os_ca, respond: Respond, *, alpn: tuple[str, ...] = ("h2",)):
        now = datetime.now(UTC)
        cert, key = issue_certificate(*os_ca, organization=None, common_name="hostile", not_before=now - timedelta(hours=1),
                                      not_after=now + timedelta(days=1), server_ips=("127.0.0.1",), client=False)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "c").write_bytes(cert)
            (Path(d) / "k").write_bytes(key)
            ctx.load_cert_chain(str(Path(d) / "c"), str(Path(d) / "k"))
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        self.ctx, self.respond = ctx, respond
        self.client_settings: dict[int, int] = {}
        self.errors: list[BaseException] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = "127.0.0.1", self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        raw, _ = self.sock.accept()
        try:
            with self.ctx.wrap_socket(raw, server_side=True) as tls:
                if tls.selected_alpn_protocol() != "h2":
                    tls.recv(1 << 16)  # a client that checks ALPN hangs up here
                    return
                conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
                conn.initiate_connection()
                tls.sendall(conn.data_to_send())
                while data := tls.recv(1 << 16):
                    for ev in conn.receive_data(data):
                        if isinstance(ev, h2.events.RemoteSettingsChanged):
                            self.client_settings |= {k: v.new_value for k, v in ev.changed_settings.items()}
                        if isinstance(ev, h2.events.StreamEnded):
                            tls.sendall(conn.data_to_send())
                            self.respond(conn, ev.stream_id, tls)
                    tls.sendall(conn.data_to_send())
        except (OSError, h2.exceptions.H2Error) as exc:  # the client hanging up on us is the expected end
            self.errors.append(exc)
        finally:
            self.sock.close()

    def __enter__(self) -> HostileApid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(10)


def _ok_headers(conn, sid) -> None:
    conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])


def _snapshot(hostile: HostileApid, make_creds) -> DRError:
    with TalosClient(hostile.host, make_creds(), port=hostile.port, timeout=10) as c:
        with pytest.raises(DRError) as ei:
            c.etcd_snapshot(io.BytesIO())
    return ei.value


def test_a_message_larger_than_apid_ever_sends_is_refused_before_it_is_buffered(os_ca, make_creds):
    assert h2stream._MAX_MESSAGE == 4 * 1024 * 1024  # apid sends 1 KiB messages

    def respond(conn, sid, sock):
        _ok_headers(conn, sid)
        conn.send_data(sid, b"\x00" + (64 * 1024 * 1024).to_bytes(4, "big") + b"x" * 100)  # claims 64 MiB, sends 100 B

    with HostileApid(os_ca, respond) as hostile:
        err = _snapshot(hostile, make_creds)
    assert isinstance(err, NodeError) and "RESOURCE_EXHAUSTED" in err.message and str(64 * 1024 * 1024) in err.message


class _NoSocket:
    def sendall(self, data: bytes) -> None:
        pass


def test_a_message_is_copied_out_of_the_receive_buffer_once():
    """The largest allowed message costs one copy of itself beyond the buffer (a slice then bytes() cost two)."""
    call = h2stream._Call(_NoSocket(), "n", 1, 10, time.monotonic() + 10)  # type: ignore[arg-type]
    size = h2stream._MAX_MESSAGE
    small = [b"a" * 1024, b"b" * 7]
    for msg in [*small, b"c" * size]:
        call.buf.extend(_grpc(msg))
    tracemalloc.start()
    try:
        got = list(call.messages())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got[:2] == small and got[2] == b"c" * size and not call.buf
    assert peak < 1.5 * size, f"peak {peak} bytes for a {size}-byte message"


def test_server_push_is_disabled_and_a_push_anyway_fails_the_call(os_ca, make_creds):
    def respond(conn, sid, sock):
        _ok_headers(conn, sid)
        sock.sendall(conn.data_to_send())
        block = hpack.Encoder().encode([(":method", "GET"), (":scheme", "https"), (":path", "/x"),
                                        (":authority", "n")])
        sock.sendall(PushPromiseFrame(sid, promised_stream_id=2, data=block, flags=["END_HEADERS"]).serialize())

    with HostileApid(os_ca, respond) as hostile:
        err = _snapshot(hostile, make_creds)
    assert hostile.client_settings.get(h2.settings.SettingCodes.ENABLE_PUSH) == 0
    assert isinstance(err, NodeError) and ("push" in err.message.lower()), err.message


def _raw_data_frame(sid: int, payload: bytes, flags: int = 0) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([0x0, flags]) + sid.to_bytes(4, "big") + payload


def test_data_before_the_response_headers_is_left_to_h2_and_refused(os_ca, make_creds):
    def respond(conn, sid, sock):
        sock.sendall(conn.data_to_send() + _raw_data_frame(sid, _grpc(m.Data(bytes=b"x").SerializeToString())))

    with HostileApid(os_ca, respond) as hostile:
        err = _snapshot(hostile, make_creds)
    assert isinstance(err, NodeError) and "INTERNAL" in err.message and "protocol error" in err.message


def test_empty_and_split_data_frames_are_taken_as_they_come():
    """Frames the client cuts itself: an empty DATA frame (also as the last bytes of a read), a message split over
    two frames, and a frame split over two reads."""
    call = h2stream._Call(_NoSocket(), "n", 1, 10, time.monotonic() + 10)  # type: ignore[arg-type]
    call.start("/x", b"")
    call.responded = True
    one, two = _grpc(b"a" * 1027), _grpc(b"b" * 100)
    got = call.receive(_raw_data_frame(call.sid, b""))  # alone in a read: nothing to index after it
    wire = (_raw_data_frame(call.sid, one) + _raw_data_frame(call.sid, b"") + _raw_data_frame(call.sid, two[:40])
            + _raw_data_frame(call.sid, two[40:]) + _raw_data_frame(call.sid, one))
    for i in range(0, len(wire), 700):
        got += call.receive(wire[i : i + 700])
    assert got == [b"a" * 1027, b"b" * 100, b"a" * 1027] and not call.buf and not call.pending


def test_window_updates_return_what_the_client_took_itself():
    """The DATA bytes cut without h2 are returned to the node by the client's own WINDOW_UPDATEs (connection and
    stream), once a quarter of the window is used."""
    sent: list[bytes] = []

    class Recorder:
        def sendall(self, data: bytes) -> None:
            sent.append(data)

    call = h2stream._Call(Recorder(), "n", 1, 10, time.monotonic() + 10)  # type: ignore[arg-type]
    call.start("/x", b"")
    call.send()  # the preface, SETTINGS and the request
    call.responded = True
    sent.clear()
    message = _grpc(b"y" * 1027)
    frame = _raw_data_frame(call.sid, message)
    count = h2stream._WINDOW // 4 // len(message) + 1
    wire = frame * count
    got = []
    for i in range(0, len(wire), 1000):  # frames cut across reads
        got += list(call.receive(wire[i : i + 1000]))
    assert got == [b"y" * 1027] * count
    updates = b"".join(sent)
    increment = (count * len(message)).to_bytes(4, "big")
    assert updates == (b"\x00\x00\x04\x08\x00" + b"\x00" * 4 + increment
                       + b"\x00\x00\x04\x08\x00" + call.sid.to_bytes(4, "big") + increment)


@pytest.mark.parametrize("alpn", [("http/1.1",), ()], ids=["http1.1", "none"])
def test_a_server_that_does_not_negotiate_h2_is_refused(os_ca, make_creds, alpn):
    with HostileApid(os_ca, lambda conn, sid, sock: None, alpn=alpn) as hostile:
        err = _snapshot(hostile, make_creds)
    assert isinstance(err, NodeUnreachable) and "did not agree to HTTP/2" in err.message and "ALPN None" in err.message


@pytest.mark.parametrize("status", ["abc", "1e3", "-1", ""])
def test_a_non_integer_grpc_status_is_a_call_error(os_ca, make_creds, status):
    def respond(conn, sid, sock):
        _ok_headers(conn, sid)
        conn.send_headers(sid, [("grpc-status", status)], end_stream=True)

    with HostileApid(os_ca, respond) as hostile:
        err = _snapshot(hostile, make_creds)
    assert isinstance(err, NodeError) and "INTERNAL" in err.message and "malformed grpc-status" in err.message


def test_a_message_that_is_not_protobuf_is_a_dr_error(os_ca, make_creds):
    def respond(conn, sid, sock):
        _ok_headers(conn, sid)
        conn.send_data(sid, _grpc(b"\xff\xff\xff"))
        conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)

    with HostileApid(os_ca, respond) as hostile:
        err = _snapshot(hostile, make_creds)
    assert isinstance(err, NodeError) and "not a Talos common.Data" in err.message


INJECTED = "boom\n2026-12-01T00:00:00Z INFO snapshot uploaded\x1b[2K\r\u202eok" + "x" * 5000


def _clean(text: str) -> bool:
    return not any(c in text for c in "\n\r\x1b\u202e") and len(text) < 1500


def test_grpc_message_is_made_printable_and_capped(os_ca, make_creds):
    def respond(conn, sid, sock):
        _ok_headers(conn, sid)
        conn.send_headers(sid, [("grpc-status", "13"), ("grpc-message", quote(INJECTED))], end_stream=True)

    with HostileApid(os_ca, respond) as hostile:
        err = _snapshot(hostile, make_creds)
    assert isinstance(err, NodeError) and _clean(err.message) and _clean(str(err)), err.message
    assert "boom\\n2026-12-01T00:00:00Z INFO" in err.message and "characters)" in err.message


def test_node_reported_error_and_hostname_are_made_printable(os_ca, make_creds):
    def respond(conn, sid, sock):
        _ok_headers(conn, sid)
        conn.send_data(sid, _grpc(m.Data(metadata=m.Metadata(hostname="n\nINFO x", error=INJECTED)).SerializeToString()))
        conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)

    with HostileApid(os_ca, respond) as hostile:
        err = _snapshot(hostile, make_creds)
    assert isinstance(err, NodeError) and _clean(err.message) and "n\\nINFO x" in err.message


def test_printable():
    assert h2stream.printable("plain text: ünïcode ok") == "plain text: ünïcode ok"
    assert h2stream.printable("a\nb\tc\x00\x1b[0m\u2028") == "a\\nb\\tc\\x00\\x1b[0m\\u2028"
    capped = h2stream.printable("y" * 10_000, 100)
    assert capped.startswith("y" * 100) and capped.endswith("... (10000 characters)") and len(capped) < 130


class _SilentPort:
    """Accepts TCP connections and then says nothing (or only ``first`` bytes): not apid, or a node still booting
    (hostile-inputs 41)."""

    def __init__(self, first: bytes = b""):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = "127.0.0.1", self.sock.getsockname()[1]
        self.first, self.received, self.conns = first, b"", []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        self.conns.append(conn)
        conn.settimeout(5)
        try:
            self.received = conn.recv(1 << 16)  # the ClientHello
            if self.first:
                conn.sendall(self.first)
        except OSError:
            pass

    def __enter__(self) -> _SilentPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(10)
        for c in self.conns:
            c.close()
        self.sock.close()


def _through_client(port: _SilentPort, make_creds, monkeypatch) -> DRError:
    connect = h2stream._connect
    monkeypatch.setattr(h2stream, "_connect", lambda host, p, ctx, timeout, name: connect(host, p, ctx, 1.0, name))
    return _snapshot(port, make_creds)  # type: ignore[arg-type]


def test_a_port_that_never_answers_the_client_hello_is_not_called_a_certificate_failure(make_creds, monkeypatch):
    with _SilentPort() as port:
        t0 = time.monotonic()
        err = _through_client(port, make_creds, monkeypatch)
        took = time.monotonic() - t0
        assert port.received[:1] == b"\x16"  # our ClientHello did go out (a TLS handshake record)
    assert isinstance(err, NodeUnreachable), err
    assert f"port {port.port} on 127.0.0.1 answered, but no TLS handshake completed in 1s: not apid, or the node " \
           "is still booting" in err.message
    assert "certificate" not in err.message + err.hint and "booting" in err.hint and "50000" in err.hint
    assert 0.9 <= took < 5


def test_a_handshake_that_stops_halfway_is_not_called_a_certificate_failure(make_creds, monkeypatch):
    # The first bytes of a TLS handshake record (type 22, TLS 1.2, length 100), then nothing.
    with _SilentPort(first=b"\x16\x03\x03\x00\x64\x02") as port:
        err = _through_client(port, make_creds, monkeypatch)
    assert isinstance(err, NodeUnreachable), err
    # OpenSSL may read the partial reply inside the call that sends the ClientHello, so the message cannot say
    # whether bytes came back; it must still not blame certificates.
    assert f"port {port.port} on 127.0.0.1 answered, but no TLS handshake completed in 1s" in err.message
    assert "certificate" not in err.message + err.hint

