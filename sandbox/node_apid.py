"""The sandbox node's apid: ``MachineService/EtcdSnapshot`` over mutual TLS on the Elastic IP (127.0.0.3:50000).

``sandbox up`` starts it as its own process (``python -m sandbox.node_apid DIR``); ``sandbox down`` stops it by pid.
It is ``sandbox.apid.SimulatedApid`` (the TLS server, the 1 KiB ``common.Data`` messages, the client-certificate
EKU rule) put in front of the simulated node, so it answers as that node does at each moment
(sandbox/CONFORMANCE.md rows "EtcdSnapshot over the API on the Elastic IP" and the rows they cite):

* node down (rebooting, halted, fault ``unreachable``): the connection is reset before TLS, as a closed port is;
* maintenance mode: a server certificate from a self-signed maintenance CA, which the talosconfig's CA does not
  verify (``x509: certificate signed by unknown authority`` on the client);
* configured: the OS-CA-signed server certificate; the caller's ``nodes`` metadata is routed as
  ``Node._check_access`` models apid's director (the private IP is served, any other address fails to forward);
  RBAC by the certificate's roles;
* etcd not running (``booting`` with etcd waiting, fault ``etcd_fails``): the call is accepted and then nothing is
  sent until the client gives up, as machined's etcd client waits with no deadline.

The snapshot is a real ``etcdctl snapshot save`` of the node's etcd, streamed from a file (never held in memory) in
1024-byte messages, with the node's snapshot faults (``snapshot_corrupt``, ``snapshot_truncate_bytes``,
``die_mid_snapshot``, ``snapshot_delay_seconds``, ``snapshot_throttle_bytes_per_second``; see ``sandbox.faults``)
applied on the wire the way the sandbox talosctl applies them to its copy.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import signal
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from dr.adapters.fsutil import atomic_write
from dr.adapters.talosapi import messages
from dr.core.credentials import issue_certificate, new_ca
from sandbox import etcd
from sandbox.apid import CHUNK, Framed, SimulatedApid, _Abort, _Cut, _Hang, etcd_info, frame_data, metadata_field
from sandbox.layout import APID_PORT, Paths
from sandbox.node import Auth, Node, NodeError, SnapshotHangs, TransportError
from sandbox.pki import ClusterSecrets

MARKER = "sandbox.node_apid"  # in the process's command line: `down` stops only a pid that carries it
HOSTNAME = "talos-sandbox-cp"
BLOCK = 64 * CHUNK  # bytes read from the snapshot file at a time

# gRPC status numbers of the codes Node raises (grpc codes.Code names as talosctl prints them).
_CODES = {"Canceled": 1, "Unknown": 2, "InvalidArgument": 3, "DeadlineExceeded": 4, "NotFound": 5,
          "AlreadyExists": 6, "PermissionDenied": 7, "ResourceExhausted": 8, "FailedPrecondition": 9, "Aborted": 10,
          "OutOfRange": 11, "Unimplemented": 12, "Internal": 13, "Unavailable": 14, "DataLoss": 15,
          "Unauthenticated": 16}  # fmt: skip


def _server_context(cert: tuple[bytes, bytes], ca_pem: bytes | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_pem is None:
        ctx.verify_mode = ssl.CERT_NONE  # maintenance: no client certificate asked for (SkipVerifyingClientCert)
    else:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=ca_pem.decode())
    with tempfile.TemporaryDirectory(prefix="node-apid-") as d:
        crt, key = Path(d) / "crt", Path(d) / "key"
        crt.write_bytes(cert[0])
        key.write_bytes(cert[1])
        ctx.load_cert_chain(str(crt), str(key))
    ctx.set_alpn_protocols(["h2"])
    return ctx


class NodeApid(SimulatedApid):
    """apid of the sandbox in ``root``, listening on its Elastic IP."""

    def __init__(self, root: str | os.PathLike[str], *, port: int = APID_PORT, index: int = 1):
        self.node = Node(root, index)
        self.paths: Paths = self.node.paths
        info = self.node.info
        hostname = info.hostname if index > 1 else HOSTNAME
        self.secrets = ClusterSecrets.load(self.paths.secrets)
        ca = base64.b64decode(self.secrets.os_ca_crt)
        ca_key = base64.b64decode(self.secrets.os_ca_key)
        now = datetime.now(UTC)
        # The node's apid certificate names both addresses (the Elastic IP is in certSANs: infra/talos.py).
        cert = issue_certificate(ca, ca_key, organization=None, common_name=hostname, not_before=now - timedelta(hours=1),
                                 not_after=now + timedelta(days=365), key=ed25519.Ed25519PrivateKey.generate(),
                                 server_ips=(info.public_ip, info.private_ip), client=False)
        super().__init__(info.etcd_endpoint, ca, ca_key, host=info.public_ip, port=port, hostname=hostname,
                         server_cert=cert)
        # Maintenance mode: a self-signed maintenance CA with no subject (secrets/maintenance_root.go:52).
        m_ca, m_key = new_ca(None, common_name=None)
        m_cert = issue_certificate(m_ca, m_key, organization=None, common_name="maintenance-service",
                                   not_before=now - timedelta(hours=1), not_after=now + timedelta(days=365),
                                   key=ed25519.Ed25519PrivateKey.generate(), server_ips=(info.public_ip,),
                                   client=False)
        self._maintenance_ctx = _server_context(m_cert, None)

    def _connection_context(self) -> ssl.SSLContext | None:
        with self.node.locked() as st:
            try:
                v = self.node.connect(st, self.host)
            except TransportError:
                return None  # connection refused: nothing listens on a node that is down
        if v.phase == "maintenance" or not v.configured:
            return self._maintenance_ctx
        return self._ctx

    def _serve(self, roles: list[str], nodes: str | None = None) -> Iterator[messages.Data]:
        who = ",".join(roles)
        auth = Auth(insecure=False, ca=self.secrets.os_ca_crt, roles=roles)  # TLS verified the chain already
        tmp_dir = self.paths.node / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / f"apid-snapshot-{os.getpid()}-{uuid.uuid4().hex[:8]}.db"
        try:
            try:
                # A `nodes` naming another node's private IP is forwarded there (Node.for_call).
                self.node.for_call(self.host, nodes).prepare_snapshot(self.host, auth, tmp, node=nodes)
            except NodeError as exc:
                self.calls.append((who, f"error:{exc.code}"))
                raise _Abort(_CODES.get(exc.code, 2), exc.desc) from None
            except TransportError:
                self.calls.append((who, "down"))
                raise _Cut() from None
            except SnapshotHangs:
                self.calls.append((who, "hang"))
                raise _Hang() from None
            self.calls.append((who, "ok"))
            yield from self._stream(tmp, nodes or self.hostname, forwarded=bool(nodes))
        finally:
            tmp.unlink(missing_ok=True)

    def _serve_etcd_info(self, path: str, roles: list[str], nodes: str | None = None) -> Iterator[Any]:
        """EtcdStatus / EtcdAlarmList as the node answers at this moment: access and routing as for EtcdSnapshot
        (``Node.etcd_info_access``), then the real etcd's answer; with etcd not running, nothing until the client
        gives up (machined's clientv3 waits for etcd with no deadline, as for EtcdSnapshot)."""
        who = ",".join(roles)
        auth = Auth(insecure=False, ca=self.secrets.os_ca_crt, roles=roles)
        try:
            target = self.node.for_call(self.host, nodes)
            running = target.etcd_info_access(self.host, auth, node=nodes)
        except NodeError as exc:
            self.calls.append((who, f"error:{exc.code}"))
            raise _Abort(_CODES.get(exc.code, 2), exc.desc) from None
        except TransportError:
            self.calls.append((who, "down"))
            raise _Cut() from None
        if not running:
            self.calls.append((who, "hang"))
            raise _Hang()
        try:
            msg = etcd_info(path, target.info.etcd_endpoint, hostname=nodes)
        except etcd.EtcdFailure:
            self.calls.append((who, "hang"))
            raise _Hang() from None
        self.calls.append((who, path.rsplit("/", 1)[-1]))
        yield msg

    def _stream(self, path: Path, hostname: str, forwarded: bool = False) -> Iterator[messages.Data | Framed]:
        """``path`` in CHUNK-byte messages, with the node's snapshot faults (as sandbox.talosctl.etcd_commands._stream_chunks).
        Read and framed 64 KiB at a time (the wire is the same 1 KiB messages): the stand-in for a Go apid should
        not be what a benchmark of the client measures."""
        faults = self.node.faults()
        size = path.stat().st_size
        flip = size // 2 if faults.get("snapshot_corrupt") and size else None
        end = max(0, size - int(faults.get("snapshot_truncate_bytes") or 0))
        die_at = end // 2 if faults.get("die_mid_snapshot") else None
        delay = float(faults.get("snapshot_delay_seconds") or 0)
        bps = int(faults.get("snapshot_throttle_bytes_per_second") or 0)
        if delay:
            time.sleep(delay)
        pos = 0
        first = True
        suffix = metadata_field(hostname) if forwarded else b""
        began = time.monotonic()
        with open(path, "rb") as f:
            while pos < end:
                block = f.read(min(BLOCK, end - pos))
                if not block:
                    break
                if flip is not None and pos <= flip < pos + len(block):
                    i = flip - pos
                    block = block[:i] + bytes([block[i] ^ 0xFF]) + block[i + 1 :]
                cut = die_at is not None and pos + len(block) >= die_at
                if cut:
                    block = block[: max(0, die_at - pos)]  # type: ignore[operator]
                pieces = [block[i : i + CHUNK] for i in range(0, len(block), CHUNK)]
                if suffix:  # every forwarded frame carries the target as given in `nodes` (backend/apid.go:172-183)
                    yield Framed(_frames(pieces, suffix))
                else:
                    if first and pieces:  # served locally: the node's own name, once
                        yield messages.Data(bytes=pieces.pop(0), metadata=messages.Metadata(hostname=hostname))
                        first = False
                    if pieces:
                        yield Framed(_frames(pieces, b""))
                pos += len(block)
                if cut:
                    raise _Cut()  # the node died: the connection drops
                if bps:  # on schedule, not a sleep per message (each would overshoot by the timer's slack)
                    ahead = began + pos / bps - time.monotonic()
                    if ahead > 0.005:
                        time.sleep(ahead)


def _frames(pieces: list[bytes], suffix: bytes) -> bytes:
    """``frame_data(p, suffix)`` for each piece, joined; full 1 KiB pieces share one precomputed header."""
    head = frame_data(b"\0" * CHUNK, suffix)[: -(CHUNK + len(suffix))]
    out: list[bytes] = []
    for p in pieces:
        if len(p) == CHUNK:
            out += (head, p, suffix)
        else:
            out.append(frame_data(p, suffix))
    return b"".join(out)


TICK_SECONDS = 0.25


def _tick(node: Node, stop: threading.Event) -> None:
    """On a multi-node sandbox the node's own loops run while nobody calls it: its etcd join loop, its learner's
    promotion, its boot (services/etcd.go). This apid process is the node's one long-lived process, so it settles the
    node every TICK_SECONDS (a one-node sandbox stays lazy: settled only when called)."""
    while not stop.wait(TICK_SECONDS):
        try:
            if node.has_own_work():
                node.snapshot_state()
        except Exception as exc:  # noqa: BLE001 - a failed tick is retried; the apid keeps serving
            print(f"settling node {node.index} failed: {exc}", flush=True)


def serve(root: Path, index: int = 1) -> int:
    """Run until SIGTERM: bind 50000 on the node's Elastic IP (another sandbox's apid may hold it: then a free port),
    write ``<node dir>/apid.json`` ({pid, port}) for ``up``, serve."""
    paths = Paths(root, index)
    try:
        apid = NodeApid(root, index=index)
        apid.start()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        apid = NodeApid(root, port=0, index=index)
        apid.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    atomic_write(paths.node / "apid.json", json.dumps({"pid": os.getpid(), "port": apid.port}) + "\n", mode=0o644)
    print(f"apid for {root} node {index} on {apid.address} (pid {os.getpid()})", flush=True)
    ticker = None
    if apid.node.multi:
        ticker = threading.Thread(target=_tick, args=(apid.node, stop), daemon=True)
        ticker.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        if ticker is not None:
            ticker.join(timeout=30)
        apid.stop()
    return 0


if __name__ == "__main__":
    sys.exit(serve(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1))
