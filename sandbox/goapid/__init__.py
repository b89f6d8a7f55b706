"""The grpc-go apid stand-in (``main.go`` here), started and stopped from Python.

``scripts/ensure-go-grpc.sh`` builds it offline from Debian's grpc-go (``make test`` runs the script first);
``binary()`` finds the build. ``GoApid`` writes its certificates to a private folder, starts it on loopback, waits for
the port it bound, and reads back the one line it logs per call (``calls()``), so a test can see what the server
observed (e.g. ``outcome=canceled`` after the client went away).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from dr.core.credentials import issue_certificate
from sandbox import procs

MARKER = "goapid"  # in the process's command line (its binary's name and -label): stop() stops only a pid that has it
SOURCE = Path(__file__).with_name("main.go")
BUILD_HINT = "build it: bash scripts/ensure-go-grpc.sh (`make test` runs it; it installs Debian's golang-go and grpc-go)"


class GoApidMissing(RuntimeError):
    """The binary is not built."""


def binary() -> Path:
    """The built stand-in (``$DR_GOAPID_BIN`` or the script's default). Raises ``GoApidMissing`` if absent."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "talos-dr" / "goapid" / "goapid"
    path = Path(os.environ.get("DR_GOAPID_BIN") or default)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise GoApidMissing(f"the grpc-go apid stand-in is not built at {path}: {BUILD_HINT}")
    return path


def available() -> bool:
    try:
        binary()
    except GoApidMissing:
        return False
    return True


_CALL = re.compile(r"call roles=(?P<roles>\S*) nodes=(?P<nodes>\S*) outcome=(?P<outcome>\S+) bytes=(?P<bytes>\d+) "
                   r"frames=(?P<frames>\d+) err=(?P<err>\".*\")$")


class GoApid:
    """One stand-in process on ``host`` (loopback), serving the OS CA's clients. Faults are fixed at start: ``hang``,
    ``stall_after`` (bytes), ``throttle`` (bytes/s), ``fail`` (an etcd failure's text). ``snapshot_file`` serves
    that file instead of a fresh ``etcdctl snapshot save`` of ``etcd_endpoint``."""

    def __init__(
        self,
        ca_cert_pem: bytes,
        ca_key_pem: bytes,
        *,
        etcd_endpoint: str = "",
        snapshot_file: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        local: tuple[str, ...] = (),
        hang: bool = False,
        stall_after: int = 0,
        throttle: int = 0,
        fail: str | None = None,
        etcdctl: str | None = None,
        server_cert: tuple[bytes, bytes] | None = None,
        log: Path | None = None,
    ):
        self.host = host
        self._want_port = port
        now = datetime.now(UTC)
        self.server_cert = server_cert or issue_certificate(
            ca_cert_pem, ca_key_pem, organization=None, common_name="talos-goapid", not_before=now - timedelta(hours=1),
            not_after=now + timedelta(days=365), key=ed25519.Ed25519PrivateKey.generate(), server_ips=(host,),
            client=False,
        )  # fmt: skip
        self.ca_cert_pem = ca_cert_pem
        self.args = [f"-endpoints={etcd_endpoint}", f"-etcdctl={etcdctl or shutil.which('etcdctl') or 'etcdctl'}"]
        if snapshot_file:
            self.args.append(f"-snapshot-file={snapshot_file}")
        if local:
            self.args.append(f"-local={','.join(local)}")
        if hang:
            self.args.append("-hang")
        if stall_after:
            self.args.append(f"-stall-after={stall_after}")
        if throttle:
            self.args.append(f"-throttle={throttle}")
        if fail:
            self.args.append(f"-fail={fail}")
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.log = log
        self.pid: int | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> GoApid:
        exe = binary()
        self._dir = tempfile.TemporaryDirectory(prefix="goapid-")
        d = Path(self._dir.name)
        (d / "ca.crt").write_bytes(self.ca_cert_pem)
        (d / "server.crt").write_bytes(self.server_cert[0])
        fd = os.open(d / "server.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.server_cert[1])
        ready = d / "ready.json"
        self.log = self.log or d / "goapid.log"
        argv = [str(exe), f"-label={MARKER}", f"-listen={self.host}:{self._want_port}", f"-ca={d / 'ca.crt'}",
                f"-cert={d / 'server.crt'}", f"-key={d / 'server.key'}", f"-ready={ready}", *self.args]
        self.pid = procs.spawn(argv, self.log)
        procs.wait_for(lambda: ready.exists() or not procs.alive(self.pid), timeout)
        try:
            self.port = int(json.loads(ready.read_text())["port"])
        except (OSError, ValueError, KeyError) as exc:
            self.stop()
            tail = self.log.read_text(errors="replace")[-500:] if self.log.exists() else ""
            raise RuntimeError(f"the grpc-go apid stand-in did not start: {tail}") from exc
        return self

    def stop(self) -> None:
        procs.stop(self.pid, MARKER)
        self.pid = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> GoApid:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def calls(self) -> list[dict]:
        """The calls the server finished, in order: roles, nodes, outcome, bytes, frames (messages sent), err."""
        if self.log is None or not self.log.exists():
            return []
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            m = _CALL.search(line)
            if m:
                d = m.groupdict()
                out.append({**d, "bytes": int(d["bytes"]), "frames": int(d["frames"]), "err": json.loads(d["err"])})
        return out


def spawn_for_sandbox(paths, info, label: str) -> int:
    """Start the stand-in as the sandbox node's apid (``python -m sandbox up --apid go``): on the Elastic IP, port
    50000 (another free port when that is taken, as sandbox/node_apid.py does), the OS-CA-signed Ed25519 server
    certificate naming both addresses, the node's etcd behind it, the private IP served as a forwarded target. Writes
    ``<dir>/node/apid.json`` ({pid, port}) once listening. ``label`` goes in its command line (what ``down`` checks).

    Unlike sandbox/node_apid.py it does not follow the simulated node's state (reboots, maintenance, faults other than
    the snapshot throttle, which the bench's slow link uses): it is the configured node's apid with etcd up, for
    interop tests and the bench."""
    import base64
    import socket

    from sandbox.layout import APID_PORT
    from sandbox.pki import ClusterSecrets

    exe = binary()
    secrets = ClusterSecrets.load(paths.secrets)
    ca, ca_key = base64.b64decode(secrets.os_ca_crt), base64.b64decode(secrets.os_ca_key)
    now = datetime.now(UTC)
    cert, key = issue_certificate(ca, ca_key, organization=None, common_name="talos-sandbox-cp",
                                  not_before=now - timedelta(hours=1), not_after=now + timedelta(days=365),
                                  key=ed25519.Ed25519PrivateKey.generate(),
                                  server_ips=(info.public_ip, info.private_ip), client=False)
    d = paths.node / "goapid"
    d.mkdir(parents=True, exist_ok=True)
    (d / "ca.crt").write_bytes(ca)
    (d / "server.crt").write_bytes(cert)
    (d / "server.key").unlink(missing_ok=True)
    fd = os.open(d / "server.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    port = APID_PORT
    with socket.socket() as s:
        try:
            s.bind((info.public_ip, APID_PORT))
        except OSError:
            port = 0
    argv = [str(exe), f"-label={label}", f"-listen={info.public_ip}:{port}", f"-ca={d / 'ca.crt'}",
            f"-cert={d / 'server.crt'}", f"-key={d / 'server.key'}", f"-ready={paths.node / 'apid.json'}",
            f"-endpoints={info.etcd_endpoint}", f"-etcdctl={shutil.which('etcdctl') or 'etcdctl'}",
            f"-local={info.private_ip}", f"-faults={paths.faults}"]
    return procs.spawn(argv, paths.logs / "apid.log")
