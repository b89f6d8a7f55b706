"""A simulated Talos apid: ``MachineService/EtcdSnapshot`` over mutual TLS, served from a real etcd.

Like the real apid it requires a client certificate signed by the OS CA and authorizes by the certificate's
Organization (the Talos role): os:admin, os:operator and os:etcd:backup may snapshot, anyone else gets
PERMISSION_DENIED. The snapshot comes from the etcd given (``etcdctl snapshot save`` into a temp file), then is
streamed in 1024-byte ``common.Data`` messages, as machined sends it (pkg/chunker/stream/stream.go ``Size: 1024``);
the HTTP/2 writes are coalesced (as grpc-go's transport does), so the message size, not the syscall count, is what a
client pays for. A certificate whose extended key usage is not exactly clientAuth is refused, as apid's
``verifyExtKeyUsage`` does (internal/app/apid/service.go:172-190). A request that names a node in its ``nodes``
metadata is proxied by a configured control plane's apid to ``<node>:50000`` (director.go): the node's own private
address loops back; any other address (the Elastic IP) is not reachable from the node and fails after the dial
timeout, reported here at once (sandbox/CONFORMANCE.md).

Two TLS stacks, because they differ where it matters:

* ``backend="openssl"`` (default): HTTP/2 (``h2``) on Python's ``ssl`` with an **Ed25519** server key, exactly the
  key type a real apid presents when the OS CA is Ed25519 (Talos's default). grpcio clients cannot talk to it.
* ``backend="grpcio"``: a grpcio server with an ECDSA P-256 server key (grpcio cannot serve Ed25519).

Fault knobs (attributes, set between calls): ``fault="cut"`` drops the connection (openssl) or fails the stream
with UNAVAILABLE (grpcio) after ``fault_after`` bytes; ``fault="truncate"`` ends the stream cleanly early;
``fault="corrupt"`` flips a byte; ``fault="error"`` answers with a Metadata error instead of data (as Talos
reports a failed snapshot).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from dr.adapters.talosapi import SNAPSHOT_ROLES, messages
from dr.core.credentials import certificate_roles, issue_certificate
from sandbox import etcd
from sandbox.layout import NODE_PRIVATE_IP

CHUNK = 1024  # machined's EtcdSnapshot message size
FLUSH = 64 * 1024  # bytes of framed messages per socket write
MAX_REQUEST = 64 * 1024  # request bytes kept (EtcdMemberListRequest is 2 bytes; grpc-go's default limit is 4 MiB)
BACKENDS = ("openssl", "grpcio")


class _Abort(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code  # gRPC status number
        self.message = message


class _Cut(Exception):
    """Drop the connection here (fault=cut)."""


class Framed(bytes):
    """Response messages already serialized and length-prefixed (``_respond`` sends them as they are): lets a
    subclass stream many 1 KiB messages without a protobuf object per message."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def frame_data(piece: bytes, suffix: bytes = b"") -> bytes:
    """One ``common.Data{bytes: piece}`` message with its gRPC prefix (field 2, length-delimited: what protobuf
    writes for it), followed by ``suffix`` (serialized fields appended to the message, as apid's ``AppendInfo``
    appends the metadata to each forwarded frame)."""
    body = b"\x12" + _varint(len(piece)) + piece + suffix
    return b"\x00" + len(body).to_bytes(4, "big") + body


def metadata_field(hostname: str) -> bytes:
    """``common.Data.metadata = {hostname}`` as serialized fields (field 1 of Data, field 1 of Metadata)."""
    md = b"\x0a" + _varint(len(hostname.encode())) + hostname.encode()
    return b"\x0a" + _varint(len(md)) + md


class _Hang(Exception):
    """Send nothing more and wait until the client gives up (cancels the stream or closes the connection), as
    machined's EtcdSnapshot does while etcd is down (sandbox/CONFORMANCE.md "EtcdSnapshot with etcd down")."""


HANG_LIMIT = 3600.0  # a hung call is dropped after this long even if the client never gives up


def _header_dict(headers: Iterable[tuple[bytes | str, bytes | str]]) -> dict[str, str]:
    # With header_encoding="utf-8" h2 hands us str names and values, though its annotations promise bytes.
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v) for k, v in headers}


def _send_all(tls, conn, sid: int, payload: bytes) -> None:
    """Send ``payload`` on stream ``sid`` as flow control allows, waiting for the client's WINDOW_UPDATEs."""
    import h2.events

    while payload:
        window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
        if window <= 0:
            data = tls.recv(65536)  # wait for WINDOW_UPDATE
            if not data:
                raise OSError("client went away")
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.StreamReset):
                    raise OSError("client reset the stream")
            tls.sendall(conn.data_to_send())
            continue
        conn.send_data(sid, payload[:window])
        payload = payload[window:]
        tls.sendall(conn.data_to_send())


def _wait_for_client(tls, conn, sid: int, limit: float) -> None:
    """Answer nothing on stream ``sid`` until the client resets it or closes the connection (or ``limit`` passes);
    HTTP/2 housekeeping (pings, window updates) is still acknowledged, as grpc-go's transport does."""
    import time

    import h2.events

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        tls.settimeout(min(5.0, max(deadline - time.monotonic(), 0.01)))
        try:
            data = tls.recv(65536)
        except TimeoutError:
            continue
        if not data:
            return
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ConnectionTerminated):
                return
            if isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                return
        out = conn.data_to_send()
        if out:
            tls.sendall(out)


def _drain(tls, timeout: float) -> None:
    """Read and drop whatever the client still sends, until it closes or goes quiet for ``timeout`` seconds."""
    tls.settimeout(timeout)
    try:
        while tls.recv(65536):
            pass
    except (OSError, ssl.SSLError):
        pass


# What machined answers besides EtcdSnapshot (sandbox/CONFORMANCE.md rows "EtcdStatus" and "EtcdAlarmList").
SERVED_METHODS = (messages.ETCD_SNAPSHOT_METHOD, messages.ETCD_STATUS_METHOD, messages.ETCD_ALARM_LIST_METHOD,
                  messages.ETCD_MEMBER_LIST_METHOD)
# Roles allowed EtcdStatus, EtcdAlarmList and EtcdMemberList (internal/app/machined/pkg/system/services/machined.go:69,
# 74,78 at v1.13.9: Admin, Operator, Reader, EtcdBackup).
ETCD_INFO_ROLES = {"os:admin", "os:operator", "os:reader", "os:etcd:backup"}
_ALARM_NUMBERS = {name: number for number, name in messages.ALARM_TYPES.items()}


def etcd_info(path: str, endpoint: str, *, hostname: str | None = None, request: bytes = b"") -> Any:
    """The response machined builds for EtcdStatus / EtcdAlarmList / EtcdMemberList (v1alpha1_server.go at v1.13.9),
    from the real etcd at ``endpoint`` (its JSON gateway: the same Maintenance.Status / Maintenance.Alarm(GET) /
    Cluster.MemberList machined's clientv3 calls). One message, no metadata when served locally; a call apid proxied
    (``nodes``) carries the node's name, as apid's backend appends it. ``request`` is the serialized request message
    (EtcdMemberList's ``query_local``). Raises ``etcd.EtcdFailure`` when etcd does not answer."""
    md = messages.Metadata(hostname=hostname) if hostname else None
    if path == messages.ETCD_MEMBER_LIST_METHOD:
        return _member_list(endpoint, md, request)
    if path == messages.ETCD_STATUS_METHOD:
        st = etcd._call(endpoint, "maintenance/status", {})
        version = str(st.get("version", ""))
        # machined fills storage_version from the version's major.minor when etcd (< 3.6) leaves it empty
        storage = str(st.get("storageVersion") or ".".join(version.split(".")[:2]) + ".0" if version else "unknown")
        status = messages.EtcdMemberStatus(
            member_id=int(st.get("header", {}).get("member_id", 0)),
            protocol_version=version,
            db_size=int(st.get("dbSize", 0)),
            db_size_in_use=int(st.get("dbSizeInUse", 0)),
            leader=int(st.get("leader", 0)),
            raft_index=int(st.get("raftIndex", 0)),
            raft_term=int(st.get("raftTerm", 0)),
            raft_applied_index=int(st.get("raftAppliedIndex", 0)),
            storage_version=storage,
            errors=[str(e) for e in st.get("errors", [])],
            is_learner=bool(st.get("isLearner", False)),
        )
        one = messages.EtcdStatus(member_status=status)
        if md is not None:
            one.metadata.CopyFrom(md)
        return messages.EtcdStatusResponse(messages=[one])
    if path == messages.ETCD_ALARM_LIST_METHOD:
        res = etcd._call(endpoint, "maintenance/alarm", {"action": "GET"})
        alarms = [messages.EtcdMemberAlarm(member_id=int(a.get("memberID", 0)),
                                           alarm=_ALARM_NUMBERS.get(str(a.get("alarm", "NONE")), 0))
                  for a in res.get("alarms", [])]
        one = messages.EtcdAlarm(member_alarms=alarms)
        if md is not None:
            one.metadata.CopyFrom(md)
        return messages.EtcdAlarmListResponse(messages=[one])
    raise ValueError(f"not an etcd info method: {path}")


def _member_list(endpoint: str, md: Any, request: bytes) -> Any:
    """EtcdMemberList as machined answers it (v1alpha1_server.go at v1.13.9): the members of etcd's MemberList under
    require-leader, each as {id, hostname (the member's name), peer_urls, client_urls, is_learner}, and
    ``legacy_members`` (the names). ``query_local`` picks machined's local etcd client over one spanning the
    control-plane nodes; the sandbox asks the node's own member either way (they differ only while it is down).
    A member with no leader: etcd's ``Unavailable: etcdserver: no leader`` goes back as the call's status when
    served locally, and as the message's metadata error when apid proxied the call (one-2-many mode: the director
    sends any ``nodes`` call that way, director.go:88-99; backend/apid.go ``BuildError``)."""
    messages.EtcdMemberListRequest.FromString(request)  # a malformed request fails here, as unmarshalling would
    try:
        listed = etcd.member_list(endpoint, require_leader=True)
    except etcd.EtcdFailure as exc:
        if "no leader" not in str(exc):
            raise  # etcd does not answer: the caller hangs, as machined's client waits for etcd
        if md is None:
            raise _Abort(14, str(exc)) from None
        md.error = f"rpc error: code = Unavailable desc = {exc}"
        md.status.code, md.status.message = 14, str(exc)
        return messages.EtcdMemberListResponse(messages=[messages.EtcdMembers(metadata=md)])
    one = messages.EtcdMembers(
        legacy_members=[m["name"] for m in listed],
        members=[messages.EtcdMember(id=m["id"], hostname=m["name"], peer_urls=m["peer_urls"],
                                     client_urls=m["client_urls"], is_learner=m["is_learner"]) for m in listed],
    )
    if md is not None:
        one.metadata.CopyFrom(md)
    return messages.EtcdMemberListResponse(messages=[one])


class SimulatedApid:
    """A server on loopback. ``start()`` binds a free port (``.port``); ``stop()`` ends it."""

    def __init__(
        self,
        etcd_endpoint: str,
        ca_cert_pem: bytes,
        ca_key_pem: bytes,
        *,
        host: str = NODE_PRIVATE_IP,  # the Lambda dials the private IP from inside the VPC
        port: int = 0,
        hostname: str = "talos-sandbox",
        backend: str = "openssl",
        server_cert: tuple[bytes, bytes] | None = None,
        etcdctl: str | None = None,
        keep_dir: str | Path | None = None,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}")
        self.etcd_endpoint = etcd_endpoint
        self.ca_cert_pem = ca_cert_pem
        self.host = host
        self.hostname = hostname
        self.backend = backend
        self._want_port = port
        self.etcdctl = etcdctl or shutil.which("etcdctl") or "etcdctl"
        self.keep_dir = Path(keep_dir) if keep_dir else None
        now = datetime.now(UTC)
        key = ed25519.Ed25519PrivateKey.generate() if backend == "openssl" else ec.generate_private_key(ec.SECP256R1())
        self.server_cert = server_cert or issue_certificate(
            ca_cert_pem,
            ca_key_pem,
            organization=None,
            common_name=hostname,
            not_before=now - timedelta(hours=1),
            not_after=now + timedelta(days=365),
            key=key,
            server_ips=(host,),
            client=False,
        )
        self.fault: str | None = None
        self.fault_after = CHUNK
        self.calls: list[tuple[str, str]] = []  # (role(s), outcome) per call, for tests
        self.handler_errors: list[str] = []
        self.accepted = 0
        self.handshake_errors: list[str] = []  # TLS handshakes the openssl backend refused, for tests
        self.last_snapshot: Path | None = None
        self._grpc: grpc.Server | None = None
        self._sock: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.port = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> SimulatedApid:
        if self.backend == "grpcio":
            self._start_grpcio()
        else:
            self._start_openssl()
        return self

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait(5)
            self._grpc = None
        if self._sock is not None:
            self._stopping.set()
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept(); close() alone does not
            except OSError:
                pass
            self._sock.close()
            self._sock = None
            for t in self._threads:
                t.join(5)
            self._threads.clear()

    def __enter__(self) -> SimulatedApid:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the RPC, independent of the TLS stack --------------------------------------------------------------------

    def _serve(self, roles: list[str], nodes: str | None = None) -> Iterator[messages.Data]:
        """The EtcdSnapshot response stream for a caller with ``roles``. Raises ``_Abort`` / ``_Cut``."""
        who = ",".join(roles)
        if nodes and nodes != self.host:
            self.calls.append((who, "forward-failed"))
            raise _Abort(14, f'connection error: desc = "transport: Error while dialing: dial tcp {nodes}:50000: '
                             'i/o timeout"')
        if not any(r in SNAPSHOT_ROLES for r in roles):
            self.calls.append((who, "denied"))
            raise _Abort(7, f"not authorized: roles {roles or ['none']} may not call EtcdSnapshot")
        fault = self.fault
        if fault == "error":
            self.calls.append((who, "error"))
            yield messages.Data(metadata=messages.Metadata(hostname=self.hostname, error="etcd snapshot failed: simulated"))
            return
        with tempfile.TemporaryDirectory(prefix="apid-snap-") as tmp:
            path = Path(tmp) / "db"
            proc = subprocess.run(
                [self.etcdctl, f"--endpoints={self.etcd_endpoint}", "snapshot", "save", str(path)],
                env={**os.environ, "ETCDCTL_API": "3"},
                capture_output=True,
                text=True,
                timeout=60,
            )
            if proc.returncode != 0:
                self.calls.append((who, "etcd-failed"))
                raise _Abort(14, f"etcd snapshot failed: {proc.stderr.strip()[-300:]}")
            if self.keep_dir is not None:
                self.keep_dir.mkdir(parents=True, exist_ok=True)
                kept = self.keep_dir / f"served-{len(self.calls)}.db"
                shutil.copyfile(path, kept)
                self.last_snapshot = kept
            self.calls.append((who, fault or "ok"))
            sent = 0
            first = True
            with open(path, "rb") as f:
                while True:
                    data = f.read(CHUNK)
                    if not data:
                        break
                    if fault in ("cut", "truncate") and sent + len(data) > self.fault_after:
                        data = data[: max(self.fault_after - sent, 0)]
                        if data:
                            yield messages.Data(bytes=data)
                        if fault == "cut":
                            raise _Cut()
                        return
                    if fault == "corrupt" and sent <= 4000 < sent + len(data):  # one byte, 4000 into the stream
                        i = 4000 - sent
                        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
                    msg = messages.Data(bytes=data)
                    if first:
                        msg.metadata.hostname = self.hostname
                        first = False
                    sent += len(data)
                    yield msg

    def _serve_etcd_info(self, path: str, roles: list[str], nodes: str | None = None,
                         request: bytes = b"") -> Iterator[Any]:
        """EtcdStatus / EtcdAlarmList / EtcdMemberList: the one response message, from the real etcd. Raises
        ``_Abort`` / ``_Hang``."""
        who = ",".join(roles)
        if nodes and nodes != self.host:
            self.calls.append((who, "forward-failed"))
            raise _Abort(14, f'connection error: desc = "transport: Error while dialing: dial tcp {nodes}:50000: '
                             'i/o timeout"')
        if not set(roles) & ETCD_INFO_ROLES:
            self.calls.append((who, "denied"))
            raise _Abort(7, f"not authorized: roles {roles or ['none']} may not call {path.rsplit('/', 1)[-1]}")
        try:
            msg = etcd_info(path, self.etcd_endpoint, hostname=nodes, request=request)
        except etcd.EtcdFailure:
            self.calls.append((who, "hang"))
            raise _Hang() from None  # machined's etcd client waits for etcd with no deadline
        self.calls.append((who, path.rsplit("/", 1)[-1]))
        yield msg

    @staticmethod
    def _roles_of(cert_pem: bytes | None) -> list[str]:
        return certificate_roles(cert_pem) if cert_pem else []

    # -- grpcio backend ------------------------------------------------------------------------------------------

    def _start_grpcio(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler(
            "machine.MachineService",
            {
                "EtcdSnapshot": grpc.unary_stream_rpc_method_handler(
                    self._grpc_etcd_snapshot,
                    request_deserializer=messages.EtcdSnapshotRequest.FromString,
                    response_serializer=lambda m: m.SerializeToString(),
                )
            },
        )
        server.add_generic_rpc_handlers((handler,))
        creds = grpc.ssl_server_credentials(
            [(self.server_cert[1], self.server_cert[0])], root_certificates=self.ca_cert_pem, require_client_auth=True
        )
        self.port = server.add_secure_port(f"{self.host}:{self._want_port}", creds)
        server.start()
        self._grpc = server

    def _grpc_etcd_snapshot(self, request, context: grpc.ServicerContext):
        pems = context.auth_context().get("x509_pem_cert") or [None]
        try:
            yield from self._serve(self._roles_of(pems[0]))
        except _Abort as exc:
            code = next(c for c in grpc.StatusCode if c.value[0] == exc.code)
            context.abort(code, exc.message)
        except _Cut:
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset by peer (sandbox fault: cut)")

    # -- openssl + h2 backend (Ed25519, like a real apid) ----------------------------------------------------------

    def _start_openssl(self) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=self.ca_cert_pem.decode())
        with tempfile.TemporaryDirectory(prefix="apid-") as d:
            crt, key = Path(d) / "crt", Path(d) / "key"
            crt.write_bytes(self.server_cert[0])
            key.write_bytes(self.server_cert[1])
            ctx.load_cert_chain(str(crt), str(key))
        ctx.set_alpn_protocols(["h2"])
        self._ctx = ctx
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._want_port))
        sock.listen(8)
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._stopping.clear()
        t = threading.Thread(target=self._accept_loop, name=f"apid-{self.port}", daemon=True)
        t.start()
        self._threads.append(t)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()  # type: ignore[union-attr]
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        import h2.config
        import h2.connection
        import h2.events

        raw.settimeout(30)
        ctx = self._connection_context()
        if ctx is None:  # nobody serves the address now: reset the connection before any TLS byte
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()
            return
        try:
            tls = ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.handshake_errors.append(str(exc))
            raw.close()  # the handshake failed: wrong CA, expired certificate, no certificate
            return
        try:
            der = tls.getpeercert(binary_form=True)
            cert_pem = ssl.DER_cert_to_PEM_cert(der).encode() if der else None
            why = self._eku_refusal(cert_pem)
            if why:  # apid's verifyExtKeyUsage fails the handshake; the client sees the connection close
                self.handshake_errors.append(why)
                return
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
            conn.initiate_connection()
            tls.sendall(conn.data_to_send())
            sid = None
            body = bytearray()  # the request's gRPC frame: read to the end of the stream (EtcdMemberList's flags)
            ended = False
            while sid is None or not ended:
                data = tls.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        headers = _header_dict(ev.headers)
                        path = headers.get(":path")
                        nodes = headers.get("nodes")
                        if path not in SERVED_METHODS:
                            conn.send_headers(ev.stream_id, [(":status", "200"), ("content-type", "application/grpc"),
                                                             ("grpc-status", "12"), ("grpc-message", f"unknown method {path}")],
                                              end_stream=True)
                        else:
                            sid = ev.stream_id
                    elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                        if len(body) < MAX_REQUEST:  # the requests served are a few bytes: the rest is not kept
                            body += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                        ended = True
                tls.sendall(conn.data_to_send())
            self._respond(tls, conn, sid, self._roles_of(cert_pem), nodes, path or messages.ETCD_SNAPSHOT_METHOD,
                          bytes(body[5:]))
        except (OSError, ssl.SSLError):
            pass  # the client went away
        except Exception as exc:  # a bug here must show in tests, not as a silent hang-up
            import traceback

            self.handler_errors.append("".join(traceback.format_exception(exc)))
        finally:
            tls.close()

    def _connection_context(self) -> ssl.SSLContext | None:
        """The TLS context for a new connection; None resets it unanswered (a subclass's node that is down)."""
        return self._ctx

    @staticmethod
    def _eku_refusal(cert_pem: bytes | None) -> str | None:
        """apid's client-certificate rule: extended key usage exactly [clientAuth] (service.go:172-190)."""
        if not cert_pem:
            return None
        from cryptography.x509.oid import ExtendedKeyUsageOID

        cert = x509.load_pem_x509_certificate(cert_pem)
        try:
            usages = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        except x509.ExtensionNotFound:
            usages = []
        if usages != [ExtendedKeyUsageOID.CLIENT_AUTH]:
            return f"certificate {cert.subject.rfc4514_string()!r} is missing the client auth extended key usage"
        return None

    def _respond(self, tls, conn, sid: int, roles: list[str], nodes: str | None = None,
                 path: str = messages.ETCD_SNAPSHOT_METHOD, request: bytes = b"") -> None:
        headers_sent = False
        pending = bytearray()
        serve = self._serve(roles, nodes) if path == messages.ETCD_SNAPSHOT_METHOD else self._serve_etcd_info(
            path, roles, nodes, request)
        try:
            try:
                for msg in serve:
                    if not headers_sent:
                        conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
                        headers_sent = True
                    if isinstance(msg, Framed):
                        pending += msg
                    else:
                        body = msg.SerializeToString()
                        pending += b"\x00" + len(body).to_bytes(4, "big") + body
                    if len(pending) >= FLUSH:
                        _send_all(tls, conn, sid, bytes(pending))
                        pending.clear()
            finally:
                if pending and headers_sent:
                    _send_all(tls, conn, sid, bytes(pending))  # what was produced before an end, an error or a cut goes out first
            trailers = [("grpc-status", "0")]
        except _Abort as exc:
            trailers = [("grpc-status", str(exc.code)), ("grpc-message", exc.message)]
        except _Hang:
            _wait_for_client(tls, conn, sid, HANG_LIMIT)
            return
        except _Cut:
            # The network drops: no trailers, no GOAWAY, no TLS close_notify. Drain what the client sent first, so
            # the kernel sends a FIN (not a RST that could destroy the bytes already sent) and the cut lands exactly
            # after fault_after bytes.
            _drain(tls, 0.2)
            tls.shutdown(socket.SHUT_RDWR)
            tls.close()
            return
        if not headers_sent:  # trailers-only response
            conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"), *trailers], end_stream=True)
        else:
            conn.send_headers(sid, trailers, end_stream=True)
        conn.close_connection()
        tls.sendall(conn.data_to_send())
        # Close gracefully: closing with unread client frames (window updates) in the receive buffer makes the kernel
        # send a RST, which can destroy the response before the client reads it.
        _drain(tls, 5)
