"""gRPC server-streaming calls over HTTP/2 (the pure-Python ``h2`` library) on Python's own TLS (OpenSSL).

Why not grpcio for this: Talos's OS CA and apid's server key are Ed25519 by default, and gRPC's TLS stack
(BoringSSL inside grpcio) cannot complete an Ed25519 handshake (grpc/grpc#24252, NO_COMMON_SIGNATURE_ALGORITHMS).
OpenSSL 1.1.1+ can. A unary request with a streamed response needs little of gRPC: a POST with
``content-type: application/grpc``, length-prefixed messages both ways, and the status in the trailers.
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import time
import unicodedata
from collections.abc import Generator, Iterator, Sequence
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hpack.struct import Header

from dr.adapters import tls

_WINDOW = 4 * 1024 * 1024  # receive window: lets apid stream ahead without a round trip per 64 KiB
# apid streams a snapshot in 1 KiB messages; anything far larger is not apid. 4 MiB is also gRPC's own default limit
# on a received message, and bounds what one hostile length prefix can make us buffer.
_MAX_MESSAGE = 4 * 1024 * 1024
# Our stream's DATA frames are cut by the client itself, without h2 (see _Call.receive): the 9-byte HTTP/2 frame header
# (RFC 9113 section 4.1: 24-bit length, type, flags, reserved bit + 31-bit stream id).
_FRAME_HEADER = struct.Struct(">BHBBL")
_DATA, _WINDOW_UPDATE = 0x0, 0x8
_END_STREAM_OR_PADDED = 0x1 | 0x8
_MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE: we never raise it from the default, so a larger frame is h2's to refuse
_MAX_TEXT = 512  # characters of node-controlled text (grpc-message, a reported error) we pass on to errors and logs

# grpc status codes by number (https://grpc.github.io/grpc/core/md_doc_statuscodes.html)
STATUS_NAMES = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
    6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION", 10: "ABORTED",
    11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}  # fmt: skip


# A port that accepted TCP and sent nothing back to our ClientHello (hostile-inputs 41), or stopped halfway through
# its handshake: dr.adapters.talosapi.client words these as such, not as certificate failures.
NO_TLS_REPLY = "answered, but no TLS handshake completed"


class CallError(Exception):
    """A failed call: ``code`` is a gRPC status name (``UNAVAILABLE`` for transport failures), ``tls`` marks
    handshake/certificate failures."""

    def __init__(self, code: str, details: str, *, tls: bool = False):
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details
        self.tls = tls


class Stalled(CallError):
    """Nothing arrived for ``idle`` seconds. ``messages`` says how many response messages came before (0: the node
    accepted the call and never started answering, as machined does for EtcdSnapshot while etcd is down)."""

    def __init__(self, idle: float, messages: int):
        super().__init__("DEADLINE_EXCEEDED", f"no data for {idle:.0f}s (after {messages} messages)")
        self.idle = idle
        self.messages = messages


def _pem_key_for_openssl(key_pem: bytes) -> bytes:
    # Talos frames PKCS#8 Ed25519 keys as "ED25519 PRIVATE KEY"; OpenSSL only reads that DER as "PRIVATE KEY".
    return key_pem.replace(b"ED25519 PRIVATE KEY", b"PRIVATE KEY")


def client_context(ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """Mutual-TLS client context trusting only ``ca_pem``, offering ALPN h2."""
    return tls.client_context(ca_pem, cert_pem, _pem_key_for_openssl(key_pem), alpn=["h2"])


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


def printable(text: str, limit: int = _MAX_TEXT) -> str:
    """Node-controlled ``text`` made safe for one log line: control and format characters (newlines, ESC, bidi
    overrides, ...) shown as escapes, and at most ``limit`` characters kept."""
    safe = "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch)[0] == "C" or ch in "\u2028\u2029" else ch
        for ch in text[: limit * 2]
    )
    return safe if len(safe) <= limit and len(text) <= limit * 2 else f"{safe[:limit]}... ({len(text)} characters)"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _header_dict(headers: list[Header]) -> dict[str, str]:
    # With header_encoding="utf-8" h2 hands us str names and values, though its annotations promise bytes.
    return {_text(name): _text(value) for name, value in headers}


def _handshake(tls: ssl.SSLSocket, host: str, port: int, timeout: float) -> None:
    """The TLS handshake, non-blocking, so that a port which accepts TCP and then says nothing, or only part of a
    handshake (not apid: another service, a node still booting), is told apart from a certificate failure, which
    OpenSSL reports as an error. Whether any byte came back cannot be told reliably: OpenSSL may read a partial reply
    inside the call that sends the ClientHello, so both cases get one message. Leaves ``tls`` blocking with
    ``timeout``, as wrap_socket would."""
    deadline = time.monotonic() + timeout
    tls.settimeout(0)
    while True:
        try:
            tls.do_handshake()
            break
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as want:
            reading = isinstance(want, ssl.SSLWantReadError)
            left = max(0.0, deadline - time.monotonic())
            readable, writable, _ = select.select([tls] if reading else [], [] if reading else [tls], [], left)
            if not (readable or writable):
                raise CallError("UNAVAILABLE", f"port {port} on {host} {NO_TLS_REPLY} in {timeout:.0f}s: not apid, "
                                "or the node is still booting or overloaded") from None
    tls.settimeout(timeout)


def _connect(host: str, port: int, context: ssl.SSLContext, connect_timeout: float,
             server_name: str | None) -> ssl.SSLSocket:
    try:
        raw = socket.create_connection((host, port), timeout=connect_timeout)
    except TimeoutError as exc:
        raise CallError("UNAVAILABLE", f"connect to {host}:{port} timed out after {connect_timeout:.0f}s") from exc
    except OSError as exc:
        raise CallError("UNAVAILABLE", f"connect to {host}:{port} failed: {exc.strerror or exc}") from exc
    try:
        tls = context.wrap_socket(raw, server_hostname=server_name or host, do_handshake_on_connect=False)
    except OSError as exc:
        raw.close()
        raise CallError("UNAVAILABLE", f"connection to {host}:{port} failed: {exc}") from exc
    try:
        _handshake(tls, host, port, connect_timeout)
    except CallError:
        tls.close()
        raise
    except ssl.SSLError as exc:
        tls.close()
        raise _tls_error(exc) from exc
    except ConnectionResetError as exc:
        # Reset before the server said anything: no TLS server there (a host that is going down or rebooting).
        tls.close()
        raise CallError("UNAVAILABLE", f"connection to {host}:{port} was reset at once: nothing serves there now "
                        "(connection refused)") from exc
    except OSError as exc:
        tls.close()
        raise CallError("UNAVAILABLE", f"TLS handshake with {host}:{port} failed: {exc}", tls=True) from exc
    alpn = tls.selected_alpn_protocol()
    if alpn != "h2":  # gRPC is HTTP/2 only; apid always agrees to h2
        tls.close()
        raise CallError("UNAVAILABLE", f"{host}:{port} did not agree to HTTP/2 in the TLS handshake (ALPN {alpn!r}): "
                        "not a gRPC endpoint such as apid")
    return tls


class _Call:
    """One server-streaming call on its own HTTP/2 connection: the state its steps share."""

    def __init__(self, tls: ssl.SSLSocket, host: str, port: int, timeout: float, deadline: float,
                 idle_timeout: float | None = None, metadata: Sequence[tuple[str, str]] = ()):
        self.tls = tls
        self.idle_timeout = idle_timeout
        self.metadata = list(metadata)
        self.yielded = 0  # response messages handed to the caller
        self.host = host
        self.port = port
        self.timeout = timeout
        self.deadline = deadline
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.sid = 0
        self.buf = bytearray()
        self.received = 0  # bytes from the node; none before a hang-up means it refused us in the TLS handshake
        self.finished = False
        self.status: str | None = None
        self.message = ""
        self.responded = False  # response HEADERS seen: from then on our stream's DATA frames skip h2
        self.pending = b""  # the start of a frame that the last read cut
        self.unacked = 0  # DATA bytes taken without h2 that no WINDOW_UPDATE of ours has returned yet
        self.deferred: CallError | None = None  # an error that came after messages still to be handed on
        self.wait: float | None = None  # the socket's timeout as last set

    def start(self, path: str, request: bytes) -> None:
        conn = self.conn
        conn.initiate_connection()
        # No server push (gRPC never uses it): sent ahead of the request, so a server sees it before it could push.
        conn.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0, h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW})
        conn.increment_flow_control_window(_WINDOW)
        self.sid = sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [
            (":method", "POST"), (":scheme", "https"), (":path", path), (":authority", f"{self.host}:{self.port}"),
            ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", f"{max(int(self.timeout), 1)}S"),
            ("user-agent", "talos-dr"), *self.metadata,
        ])  # fmt: skip
        conn.send_data(sid, b"\x00" + len(request).to_bytes(4, "big") + request, end_stream=True)

    def hung_up(self, what: str) -> CallError:
        # Under TLS 1.3 the client's handshake completes before the server has checked our certificate; a server that
        # refuses it just closes. A real apid sends its HTTP/2 SETTINGS at once, so silence-then-close means refusal.
        if self.received == 0:
            return CallError("UNAVAILABLE", f"{self.host}:{self.port} closed the connection right after the handshake "
                             f"({what}): it most likely refused our client certificate", tls=True)
        return CallError("UNAVAILABLE", f"connection to {self.host}:{self.port} {what} mid-stream")

    def window_update(self) -> None:
        """Return the window for the DATA bytes taken without h2 (h2 never saw them, so it would not): one
        WINDOW_UPDATE for the connection and one for the stream, after h2's own pending frames."""
        increment = self.unacked.to_bytes(4, "big")
        self.unacked = 0
        header = (4).to_bytes(3, "big") + bytes([_WINDOW_UPDATE, 0])
        self.send(header + b"\0\0\0\0" + increment + header + self.sid.to_bytes(4, "big") + increment)

    def send(self, extra: bytes = b"") -> None:
        out = self.conn.data_to_send() + extra
        if not out:
            return
        try:
            self.tls.sendall(out)
        except ssl.SSLError as exc:
            if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
                raise self.hung_up("closed by the node") from exc
            raise _tls_error(exc) from exc
        except OSError as exc:
            raise self.hung_up(f"lost: {exc}") from exc

    def read(self) -> bytes:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise CallError("DEADLINE_EXCEEDED", f"no complete response within {self.timeout:.0f}s")
        idle = self.idle_timeout
        wait = min(left, idle) if idle else left
        # settimeout costs a system call per read (tens of thousands per GiB): only when the wait shrinks by more
        # than a second (the deadline is then kept to within a second) or grows (a constant idle timeout: once).
        if self.wait is None or wait > self.wait or self.wait - wait > 1.0:
            self.tls.settimeout(wait)
            self.wait = wait
        try:
            data = self.tls.recv(1 << 16)
        except TimeoutError as exc:
            if idle and idle < left:
                raise Stalled(idle, self.yielded) from exc
            raise CallError("DEADLINE_EXCEEDED", f"no complete response within {self.timeout:.0f}s") from exc
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
            raise self.hung_up("closed by the node") from exc
        except ssl.SSLError as exc:  # TLS 1.3: a refused client certificate arrives as an alert on first read
            raise _tls_error(exc) from exc
        except OSError as exc:
            raise self.hung_up(f"lost: {exc}") from exc
        if not data:
            raise self.hung_up("closed by the node")
        self.received += len(data)
        return data

    def status_from(self, headers: dict[str, str]) -> None:
        if "grpc-status" in headers:
            raw = headers["grpc-status"]
            if not (raw.isascii() and raw.isdigit()):
                raise CallError("INTERNAL", f"malformed grpc-status {printable(raw, 40)!r} from {self.host}:{self.port}")
            code = int(raw)
            self.status = STATUS_NAMES.get(code, f"CODE_{code}")
            self.message = printable(unquote(headers.get("grpc-message", "")))

    def messages(self) -> Iterator[bytes]:
        """The complete length-prefixed messages in the buffer, removed from it as they are yielded."""
        buf = self.buf
        self.send()  # window updates first, so the node keeps streaming while the caller works
        while len(buf) >= 5:
            if buf[0] != 0:
                raise CallError("INTERNAL", "compressed gRPC message (no compression was negotiated)")
            size = int.from_bytes(buf[1:5], "big")
            if size > _MAX_MESSAGE:
                raise CallError("RESOURCE_EXHAUSTED", f"gRPC message of {size} bytes")
            if len(buf) < 5 + size:
                break
            with memoryview(buf) as view:  # one copy out of the buffer (a bytearray slice would be a second)
                msg = bytes(view[5 : 5 + size])
            del buf[: 5 + size]  # cheap at the front of a bytearray
            self.yielded += 1
            yield msg

    def handle(self, ev: h2.events.Event) -> Iterator[bytes]:
        """Act on one HTTP/2 event, yielding the messages it completes."""
        mine = getattr(ev, "stream_id", None) == self.sid
        if isinstance(ev, h2.events.ResponseReceived) and mine:
            headers = _header_dict(ev.headers)
            if headers.get(":status") != "200":
                raise CallError("UNAVAILABLE", f"HTTP status {printable(headers.get(':status', '?'), 40)} from {self.host}:{self.port}")
            self.status_from(headers)  # a trailers-only response carries its status here
            self.responded = True
        elif isinstance(ev, h2.events.DataReceived) and mine:
            self.buf.extend(ev.data)
            self.conn.acknowledge_received_data(ev.flow_controlled_length, self.sid)
            yield from self.messages()
        elif isinstance(ev, h2.events.TrailersReceived) and mine:
            self.status_from(_header_dict(ev.headers))
        elif isinstance(ev, h2.events.StreamEnded) and mine:
            self.finished = True
        elif isinstance(ev, h2.events.StreamReset) and mine:
            raise CallError("UNAVAILABLE" if ev.error_code else "CANCELLED",
                            f"the node reset the stream (HTTP/2 error {ev.error_code})")
        elif isinstance(ev, h2.events.PushedStreamReceived):  # refused in our SETTINGS; h2 only enforces it once acked
            raise CallError("INTERNAL", f"{self.host}:{self.port} pushed a stream although push is disabled")
        elif isinstance(ev, h2.events.ConnectionTerminated):
            if not self.finished:
                raise CallError("UNAVAILABLE", f"the node closed the connection (HTTP/2 GOAWAY {ev.error_code})")

    def feed(self, frames: bytes, out: list[bytes]) -> None:
        """Whole frames for h2: act on the events they make; the messages they complete go to ``out``."""
        try:
            events = self.conn.receive_data(frames)
        except h2.exceptions.ProtocolError as exc:
            raise CallError("INTERNAL", f"HTTP/2 protocol error from {self.host}:{self.port}: {exc}") from exc
        for ev in events:
            out.extend(self.handle(ev))

    def receive(self, data: bytes) -> list[bytes]:
        """The bytes of one read: the messages they complete, in order. An error after some messages is kept in
        ``deferred`` (raised once those are handed on), so a caller sees every byte that came before it.

        A real apid (grpc-go) sends each 1 KiB message in a DATA frame of its own, about a million frames per GiB
        (grpc-go internal/transport/controlbuf.go processData: one queued message per frame). Through h2, each frame
        costs an event object, state checks and a flow-control acknowledgement, most of the client's CPU. So the
        frames are cut here: our stream's plain DATA frames (no END_STREAM, no padding, within the default maximum
        frame size, after the response HEADERS) go straight to the message buffer, and a frame that holds exactly
        one whole message is yielded without touching the buffer. Every other frame (SETTINGS, PING, HEADERS,
        trailers, RST_STREAM, GOAWAY, a DATA frame that is not ordinary) goes to h2, in order, so its checks apply.
        The window for the bytes taken here is returned by our own WINDOW_UPDATEs, for bytes already read: as with
        h2's acknowledgements before, a node that ignores the window gains nothing, as nothing is read ahead of the
        caller (one read, at most a TLS record, is held at a time)."""
        out: list[bytes] = []
        try:
            self._receive(data, out)
        except CallError as exc:
            if not out:
                raise
            self.deferred = exc
        return out

    def _receive(self, data: bytes, out: list[bytes]) -> None:
        if self.pending:
            data = self.pending + data
        end_of_data = len(data)
        pos = 0
        h2_from = -1  # start of a run of frames for h2 not yet fed
        sid = self.sid
        header = _FRAME_HEADER.unpack_from
        while pos + 9 <= end_of_data:
            hi, lo, ftype, flags, stream = header(data, pos)
            end = pos + 9 + (hi << 16 | lo)
            if end > end_of_data:
                break
            if ftype == _DATA and stream == sid and not flags & _END_STREAM_OR_PADDED and end - pos - 9 <= _MAX_FRAME:
                if h2_from >= 0:
                    self.feed(data[h2_from:pos], out)
                    h2_from = -1
                if self.responded and not self.finished:
                    if (not self.buf and end - pos >= 14 and data[pos + 9] == 0
                            and int.from_bytes(data[pos + 10 : pos + 14], "big") == end - pos - 14):
                        pos = self.take_run(data, pos, end - pos, end_of_data, out)
                        continue
                    self.take(data, pos + 9, end, out)
                    pos = end
                    continue
            if h2_from < 0:
                h2_from = pos
            pos = end
        if h2_from >= 0:
            self.feed(data[h2_from:pos], out)
        self.pending = data[pos:]

    def take_run(self, data: bytes, pos: int, stride: int, end_of_data: int, out: list[bytes]) -> int:
        """grpc-go's common case, a frame at ``pos`` that is one whole message, and the frames after it that have
        the very same 14 bytes of frame header and gRPC prefix (same stream, flags and size: apid's 1 KiB
        messages): their messages go to ``out`` together. Returns where the run ends."""
        head = data[pos : pos + 14]
        last = pos + stride
        while last + stride <= end_of_data and data[last : last + 14] == head:
            last += stride
        out.extend([data[p + 14 : p + stride] for p in range(pos, last, stride)])
        count = (last - pos) // stride
        self.yielded += count
        self.unacked += count * (stride - 9)
        if self.unacked >= _WINDOW // 4:  # the node always has 3/4 of the window ahead of it
            self.window_update()
        return last

    def take(self, data: bytes, start: int, end: int, out: list[bytes]) -> None:
        """The payload ``data[start:end]`` of one of our DATA frames: its messages to ``out``, with flow control."""
        size = end - start
        self.unacked += size
        if self.unacked >= _WINDOW // 4:  # the node always has 3/4 of the window ahead of it
            self.window_update()
        if not self.buf and size >= 5 and data[start] == 0 and int.from_bytes(data[start + 1 : start + 5], "big") == size - 5:
            self.yielded += 1
            out.append(data[start + 5 : end])  # the frame is one whole message (grpc-go's way): no buffer
        elif size:
            with memoryview(data) as view:
                self.buf += view[start:end]
            out.extend(self.messages())

    def run(self) -> Generator[bytes, None, None]:
        """Read until the stream ends, yielding each message; then check how it ended."""
        for batch in self.batches():
            yield from batch

    def batches(self) -> Generator[list[bytes], None, None]:
        """Read until the stream ends, yielding the messages of each read as a list; then check how it ended."""
        self.send()
        while not self.finished:
            batch = self.receive(self.read())
            self.send()
            if batch:
                yield batch
            if self.deferred is not None:
                raise self.deferred
        if self.buf:
            raise CallError("INTERNAL", f"the stream ended inside a message ({len(self.buf)} bytes left over)")
        if self.status is None:
            raise CallError("INTERNAL", "the stream ended without a gRPC status")
        if self.status != "OK":
            raise CallError(self.status, self.message or self.status.lower())

    def close(self) -> None:
        if not self.finished:
            try:
                self.conn.reset_stream(self.sid)
                self.tls.sendall(self.conn.data_to_send())
            except Exception:  # best effort: the connection is going away anyway
                pass
        self.tls.close()


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
    metadata: Sequence[tuple[str, str]] = (),
    idle_timeout: float | None = None,
) -> Generator[bytes, None, None]:
    """Call ``path`` with one request message and yield each response message's bytes.

    ``metadata`` is sent as request headers (gRPC metadata: lower-case ASCII names, e.g. ``("nodes", ip)``, which
    apid routes by). With ``idle_timeout``, a connection that brings nothing for that long raises ``Stalled``.
    Raises ``CallError`` for a non-OK status or a transport failure. Closing the generator early resets the stream
    and closes the connection.
    """
    for batch in unary_stream_batches(host, port, path, request, context, timeout=timeout,
                                      connect_timeout=connect_timeout, server_name=server_name, metadata=metadata,
                                      idle_timeout=idle_timeout):
        yield from batch


def unary_stream_batches(
    host: str,
    port: int,
    path: str,
    request: bytes,
    context: ssl.SSLContext,
    *,
    timeout: float,
    connect_timeout: float = 10.0,
    server_name: str | None = None,
    metadata: Sequence[tuple[str, str]] = (),
    idle_timeout: float | None = None,
) -> Generator[list[bytes], None, None]:
    """``unary_stream``, yielding the messages of each read together (a list, in order): a caller that handles a
    million messages per GiB loops over each list instead of resuming a generator per message."""
    for name, _ in metadata:
        if name != name.lower() or name.startswith((":", "grpc-")) or not name.isascii():
            raise ValueError(f"not a gRPC metadata name: {name!r}")
    deadline = time.monotonic() + timeout
    tls = _connect(host, port, context, connect_timeout, server_name)
    call = _Call(tls, host, port, timeout, deadline, idle_timeout, metadata)
    call.start(path, request)
    try:
        yield from call.batches()
    finally:
        call.close()
