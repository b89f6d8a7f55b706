"""A simulated Talos apid: ``MachineService/EtcdSnapshot`` over mutual TLS, served from a real etcd.

Like the real apid it requires a client certificate signed by the OS CA and authorizes by the certificate's
Organization (the Talos role): os:admin, os:operator and os:etcd:backup may snapshot, anyone else gets
PERMISSION_DENIED. The snapshot comes from the etcd given (``etcdctl snapshot save`` into a temp file), then is
streamed in chunks like Talos does.

Fault knobs (attributes, set between calls): ``fault="cut"`` fails the stream with UNAVAILABLE after
``fault_after`` bytes (a dropped connection); ``fault="truncate"`` ends the stream cleanly early; ``fault="corrupt"``
flips a byte; ``fault="error"`` answers with a Metadata error instead of data (as Talos reports a failed snapshot).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from dr.credentials import issue_certificate
from dr.talosapi import SNAPSHOT_ROLES, messages

CHUNK = 64 * 1024


class SimulatedApid:
    """A gRPC server on loopback. ``start()`` binds a free port (``.port``); ``stop()`` ends it."""

    def __init__(
        self,
        etcd_endpoint: str,
        ca_cert_pem: bytes,
        ca_key_pem: bytes,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        hostname: str = "talos-sandbox",
        server_cert: tuple[bytes, bytes] | None = None,
        etcdctl: str | None = None,
        keep_dir: str | Path | None = None,
    ):
        self.etcd_endpoint = etcd_endpoint
        self.ca_cert_pem = ca_cert_pem
        self.host = host
        self.hostname = hostname
        self._want_port = port
        self.etcdctl = etcdctl or shutil.which("etcdctl") or "etcdctl"
        self.keep_dir = Path(keep_dir) if keep_dir else None
        now = datetime.now(UTC)
        self.server_cert = server_cert or issue_certificate(
            ca_cert_pem,
            ca_key_pem,
            organization=None,
            common_name=hostname,
            not_before=now - timedelta(hours=1),
            not_after=now + timedelta(days=365),
            server_ips=(host,),
            client=False,
        )
        self.fault: str | None = None
        self.fault_after = CHUNK
        self.calls: list[tuple[str, str]] = []  # (role(s), outcome) per call, for tests
        self.last_snapshot: Path | None = None
        self._server: grpc.Server | None = None
        self._lock = threading.Lock()
        self.port = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> SimulatedApid:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler(
            "machine.MachineService",
            {
                "EtcdSnapshot": grpc.unary_stream_rpc_method_handler(
                    self._etcd_snapshot,
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
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None

    def __enter__(self) -> SimulatedApid:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the RPC -------------------------------------------------------------------------------------------------

    def _roles(self, context: grpc.ServicerContext) -> list[str]:
        pems = context.auth_context().get("x509_pem_cert") or []
        if not pems:
            return []
        cert = x509.load_pem_x509_certificate(pems[0])
        return [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]

    def _etcd_snapshot(self, request, context: grpc.ServicerContext):
        roles = self._roles(context)
        if not any(r in SNAPSHOT_ROLES for r in roles):
            self.calls.append((",".join(roles), "denied"))
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"not authorized: roles {roles or ['none']} may not call EtcdSnapshot")
        fault = self.fault
        if fault == "error":
            self.calls.append((",".join(roles), "error"))
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
                self.calls.append((",".join(roles), "etcd-failed"))
                context.abort(grpc.StatusCode.UNAVAILABLE, f"etcd snapshot failed: {proc.stderr.strip()[-300:]}")
            if self.keep_dir is not None:
                self.keep_dir.mkdir(parents=True, exist_ok=True)
                kept = self.keep_dir / f"served-{len(self.calls)}.db"
                shutil.copyfile(path, kept)
                self.last_snapshot = kept
            self.calls.append((",".join(roles), fault or "ok"))
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
                            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset by peer (sandbox fault: cut)")
                        return
                    if fault == "corrupt" and first and len(data) > 4096:
                        data = data[:4000] + bytes([data[4000] ^ 0xFF]) + data[4001:]
                    msg = messages.Data(bytes=data)
                    if first:
                        msg.metadata.hostname = self.hostname
                        first = False
                    sent += len(data)
                    yield msg
