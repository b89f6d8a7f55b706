"""A kube-apiserver stand-in for the sandbox: the few Kubernetes API calls the restore makes, on the cluster endpoint.

``sandbox up`` starts it as its own process (``python -m sandbox.kube_apiserver DIR``) on the Elastic IP, port 6443
(the cluster endpoint ``https://127.0.0.3:6443``; another free port, written into the kubeconfig, when another
sandbox holds 6443); ``down`` stops it by pid. It serves HTTPS with a server certificate from the cluster's
Kubernetes CA and requires a client certificate that CA signed (the kubeconfig's admin certificate), as
kube-apiserver's ``--client-ca-file`` authentication does. Objects live in the node's etcd, under the keys
kube-apiserver uses (sandbox/kube.py):

* ``GET /api/v1/nodes``: a ``NodeList`` of ``/registry/minions/*``;
* ``DELETE /api/v1/nodes/{name}``: removes ``/registry/minions/{name}``, answers the deleted object (200) or a
  ``Status`` NotFound (404), as the API does;
* ``GET /apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}``: the node's heartbeat Lease, or 404.

While the node is down or its etcd is not running it answers 503 with a ``Status``, where a real kube-apiserver
would time out or refuse: the client treats both as "not answering yet".
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
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from dr.adapters.fsutil import atomic_write
from dr.core.credentials import issue_certificate
from sandbox import etcd, kube
from sandbox.layout import KUBE_PORT, Info, Paths
from sandbox.pki import ClusterSecrets

MARKER = "sandbox.kube_apiserver"  # in the process's command line: `down` stops only a pid that carries it
_LEASE = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/"


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class _Handler(BaseHTTPRequestHandler):
    server_version = "kube-apiserver-sandbox"
    paths: Paths

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        print(f"{self.command} {self.path} " + format % args, flush=True)

    def _send(self, code: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _endpoint(self) -> str:
        """The etcd this API server reads: the node's; on a multi-node sandbox (the cluster endpoint is a load balancer
        in front of every control-plane node) a member with a leader, else node 1's (which then fails the call)."""
        info = Info.load(self.paths)
        if info.node_count == 1:
            return info.etcd_endpoint
        from sandbox import membership
        from sandbox.node import Node

        nodes = Node(self.paths.root).cluster()
        return membership.answering_endpoint(nodes, leader=True) or info.etcd_endpoint

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        try:
            if self.path.split("?")[0] == "/api/v1/nodes":
                items = kube.list_nodes(self._endpoint())
                self._send(200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": items})
            elif self.path.startswith(_LEASE):
                name = self.path[len(_LEASE):]
                raw = etcd.get_key(self._endpoint(), kube.LEASES_PREFIX + name)
                if raw is None:
                    self._send(404, _status(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found'))
                else:
                    self._send(200, json.loads(raw))
            else:
                self._send(404, _status(404, "NotFound", "the server could not find the requested resource"))
        except etcd.EtcdFailure as exc:
            self._send(503, _status(503, "ServiceUnavailable", f"etcd is not answering: {exc}"))

    def do_DELETE(self) -> None:  # noqa: N802
        prefix = "/api/v1/nodes/"
        if not self.path.startswith(prefix) or "/" in self.path[len(prefix):]:
            self._send(404, _status(404, "NotFound", "the server could not find the requested resource"))
            return
        name = self.path[len(prefix):]
        key = kube.NODES_PREFIX + name
        try:
            raw = etcd.get_key(self._endpoint(), key)
            if raw is None or not etcd.delete_key(self._endpoint(), key):
                self._send(404, _status(404, "NotFound", f'nodes "{name}" not found'))
                return
        except etcd.EtcdFailure as exc:
            self._send(503, _status(503, "ServiceUnavailable", f"etcd is not answering: {exc}"))
            return
        self._send(200, kube.decode(key, raw))


def _context(secrets: ClusterSecrets, host: str) -> ssl.SSLContext:
    k8s = secrets.bundle["certs"]["k8s"]
    ca, ca_key = base64.b64decode(k8s["crt"]), base64.b64decode(k8s["key"])
    now = datetime.now(UTC)
    crt, key = issue_certificate(ca, ca_key, organization=None, common_name="kube-apiserver",
                                 not_before=now - timedelta(hours=1), not_after=now + timedelta(days=365),
                                 server_ips=(host, "127.0.0.1"), client=False)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED  # --client-ca-file: a client certificate the cluster CA signed
    ctx.load_verify_locations(cadata=ca.decode())
    with tempfile.TemporaryDirectory(prefix="kube-apiserver-") as d:
        c, k = Path(d) / "crt", Path(d) / "key"
        c.write_bytes(crt)
        k.write_bytes(key)
        ctx.load_cert_chain(str(c), str(k))
    return ctx


def serve(root: Path) -> int:
    """Run until SIGTERM: bind 6443 on the Elastic IP (or a free port when another sandbox holds it), write
    ``<dir>/node/kube-apiserver.json`` ({pid, port}) for ``up``, serve."""
    paths = Paths(root)
    info = Info.load(paths)
    handler = type("Handler", (_Handler,), {"paths": paths})
    try:
        httpd = ThreadingHTTPServer((info.public_ip, KUBE_PORT), handler)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        httpd = ThreadingHTTPServer((info.public_ip, 0), handler)
    ctx = _context(ClusterSecrets.load(paths.secrets), info.public_ip)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    port = httpd.server_address[1]
    atomic_write(paths.node / "kube-apiserver.json", json.dumps({"pid": os.getpid(), "port": port}) + "\n",
                 mode=0o644)
    print(f"kube-apiserver stand-in for {root} on {info.public_ip}:{port} (pid {os.getpid()})", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        httpd.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(serve(Path(sys.argv[1])))
