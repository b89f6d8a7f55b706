"""gRPC server-streaming calls over HTTP/2 (the pure-Python ``h2`` library) on Python's own TLS (OpenSSL).

Why not grpcio for this: Talos's OS CA and apid's server key are Ed25519 by default, and gRPC's TLS stack
(BoringSSL inside grpcio) cannot complete an Ed25519 handshake (grpc/grpc#24252, NO_COMMON_SIGNATURE_ALGORITHMS).
OpenSSL 1.1.1+ can. A unary request with a streamed response needs little of gRPC: a POST with
``content-type: application/grpc``, length-prefixed messages both ways, and the status in the trailers.
"""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

_WINDOW = 4 * 1024 * 1024  # receive window: lets apid stream ahead without a round trip per 64 KiB
_MAX_MESSAGE = 64 * 1024 * 1024

# grpc status codes by number (https://grpc.github.io/grpc/core/md_doc_statuscodes.html)
STATUS_NAMES = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
    6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION", 10: "ABORTED",
    11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}  # fmt: skip


class CallError(Exception):
    """A failed call: ``code`` is a gRPC status name (``UNAVAILABLE`` for transport failures), ``tls`` marks
    handshake/certificate failures."""

    def __init__(self, code: str, details: str, *, tls: bool = False):
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details
        self.tls = tls


def _pem_key_for_openssl(key_pem: bytes) -> bytes:
    # Talos frames PKCS#8 Ed25519 keys as "ED25519 PRIVATE KEY"; OpenSSL only reads that DER as "PRIVATE KEY".
    return key_pem.replace(b"ED25519 PRIVATE KEY", b"PRIVATE KEY")


def client_context(ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """Mutual-TLS client context trusting only ``ca_pem``, offering ALPN h2."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=ca_pem.decode())
    # ssl reads a client key from files only: write both to a private temp dir, load, delete.
    with tempfile.TemporaryDirectory(prefix="talos-dr-") as d:
        paths = []
        for name, data in (("crt.pem", cert_pem), ("key.pem", _pem_key_for_openssl(key_pem))):
            path = os.path.join(d, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            paths.append(path)
        ctx.load_cert_chain(paths[0], paths[1])
    ctx.set_alpn_protocols(["h2"])
    return ctx


def _tls_error(exc: ssl.SSLError) -> CallError:
    reason = (getattr(exc, "reason", None) or "").upper()
    text = str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or text
        return CallError("UNAVAILABLE", f"the node's certificate did not verify: {detail}", tls=True)
    if "EXPIRED" in reason:
        return CallError("UNAVAILABLE", f"the node refused our client certificate as expired ({text})", tls=True)
    if reason:
        return CallError("UNAVAILABLE", f"TLS failure: {reason.lower().replace('_', ' ')} ({text})", tls=True)
    return CallError("UNAVAILABLE", f"TLS failure: {text}", tls=True)


def unary_stream(
    host: str,
    port: int,
    path: str,
    request: bytes,
    context: ssl.SSLContext,
    *,
    timeout: float,
    connect_timeout: float = 10.0,
    server_name: str | None = None,
) -> Iterator[bytes]:
    """Call ``path`` with one request message and yield each response message's bytes.

    Raises ``CallError`` for a non-OK status or a transport failure. Closing the generator early resets the stream
    and closes the connection.
    """
    deadline = time.monotonic() + timeout
    try:
        raw = socket.create_connection((host, port), timeout=connect_timeout)
    except TimeoutError as exc:
        raise CallError("UNAVAILABLE", f"connect to {host}:{port} timed out after {connect_timeout:.0f}s") from exc
    except OSError as exc:
        raise CallError("UNAVAILABLE", f"connect to {host}:{port} failed: {exc.strerror or exc}") from exc
    try:
        tls = context.wrap_socket(raw, server_hostname=server_name or host)
    except ssl.SSLError as exc:
        raw.close()
        raise _tls_error(exc) from exc
    except OSError as exc:
        raw.close()
        raise CallError("UNAVAILABLE", f"TLS handshake with {host}:{port} failed: {exc}", tls=True) from exc

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW})
    conn.increment_flow_control_window(_WINDOW)
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [
        (":method", "POST"), (":scheme", "https"), (":path", path), (":authority", f"{host}:{port}"),
        ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", f"{max(int(timeout), 1)}S"),
        ("user-agent", "talos-dr"),
    ])  # fmt: skip
    conn.send_data(sid, b"\x00" + len(request).to_bytes(4, "big") + request, end_stream=True)

    buf = bytearray()
    received = 0  # bytes from the node; none before a hang-up means it refused us in the TLS handshake
    finished = False
    status: str | None = None
    message = ""

    def hung_up(what: str) -> CallError:
        # Under TLS 1.3 the client's handshake completes before the server has checked our certificate; a server that
        # refuses it just closes. A real apid sends its HTTP/2 SETTINGS at once, so silence-then-close means refusal.
        if received == 0:
            return CallError("UNAVAILABLE", f"{host}:{port} closed the connection right after the handshake ({what}): "
                             "it most likely refused our client certificate", tls=True)
        return CallError("UNAVAILABLE", f"connection to {host}:{port} {what} mid-stream")

    def send() -> None:
        out = conn.data_to_send()
        if not out:
            return
        try:
            tls.sendall(out)
        except ssl.SSLError as exc:
            if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
                raise hung_up("closed by the node") from exc
            raise _tls_error(exc) from exc
        except OSError as exc:
            raise hung_up(f"lost: {exc}") from exc

    def read() -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CallError("DEADLINE_EXCEEDED", f"no complete response within {timeout:.0f}s")
        tls.settimeout(left)
        try:
            data = tls.recv(1 << 16)
        except TimeoutError as exc:
            raise CallError("DEADLINE_EXCEEDED", f"no complete response within {timeout:.0f}s") from exc
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
            raise hung_up("closed by the node") from exc
        except ssl.SSLError as exc:  # TLS 1.3: a refused client certificate arrives as an alert on first read
            raise _tls_error(exc) from exc
        except OSError as exc:
            raise hung_up(f"lost: {exc}") from exc
        if not data:
            raise hung_up("closed by the node")
        return data

    def status_from(headers: dict[str, str]) -> None:
        nonlocal status, message
        if "grpc-status" in headers:
            code = int(headers["grpc-status"])
            status = STATUS_NAMES.get(code, f"CODE_{code}")
            message = unquote(headers.get("grpc-message", ""))

    try:
        send()
        while not finished:
            data = read()
            received += len(data)
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                raise CallError("INTERNAL", f"HTTP/2 protocol error from {host}:{port}: {exc}") from exc
            for ev in events:
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    headers = dict(ev.headers)
                    if headers.get(":status") != "200":
                        raise CallError("UNAVAILABLE", f"HTTP status {headers.get(':status')} from {host}:{port}")
                    status_from(headers)  # a trailers-only response carries its status here
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    buf.extend(ev.data)
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                    while len(buf) >= 5:
                        if buf[0] != 0:
                            raise CallError("INTERNAL", "compressed gRPC message (no compression was negotiated)")
                        size = int.from_bytes(buf[1:5], "big")
                        if size > _MAX_MESSAGE:
                            raise CallError("RESOURCE_EXHAUSTED", f"gRPC message of {size} bytes")
                        if len(buf) < 5 + size:
                            break
                        msg = bytes(buf[5 : 5 + size])
                        del buf[: 5 + size]
                        send()  # window updates first, so the node keeps streaming while the caller works
                        yield msg
                elif isinstance(ev, h2.events.TrailersReceived) and ev.stream_id == sid:
                    status_from(dict(ev.headers))
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    finished = True
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    raise CallError("UNAVAILABLE" if ev.error_code else "CANCELLED",
                                    f"the node reset the stream (HTTP/2 error {ev.error_code})")
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    if not finished:
                        raise CallError("UNAVAILABLE", f"the node closed the connection (HTTP/2 GOAWAY {ev.error_code})")
            send()
        if buf:
            raise CallError("INTERNAL", f"the stream ended inside a message ({len(buf)} bytes left over)")
        if status is None:
            raise CallError("INTERNAL", "the stream ended without a gRPC status")
        if status != "OK":
            raise CallError(status, message or status.lower())
    finally:
        if not finished:
            try:
                conn.reset_stream(sid)
                tls.sendall(conn.data_to_send())
            except Exception:  # best effort: the connection is going away anyway
                pass
        tls.close()
