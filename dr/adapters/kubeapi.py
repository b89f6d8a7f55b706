"""Thin adapter over the Kubernetes API: the three calls the restore makes, with the admin kubeconfig's client
certificate, on ``http.client`` and ``ssl`` (no Kubernetes client library).

* ``GET /api/v1/nodes`` (a ``NodeList``);
* ``GET /apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}`` (the kubelet's heartbeat: a
  running kubelet renews its Lease every quarter of ``leaseDurationSeconds``, 10 s of the default 40 s; kubernetes
  v1.34 pkg/kubelet/kubelet.go ``renewInterval``/``nodeLeaseRenewIntervalFraction`` 0.25);
* ``DELETE /api/v1/nodes/{name}``.

The kubeconfig is the one ``talosctl kubeconfig`` writes: one cluster with ``server`` and
``certificate-authority-data``, one user with ``client-certificate-data`` and ``client-key-data``. The key is
loaded into the TLS context from a file in a private temporary folder (``ssl`` reads keys only from files), created
0600 and removed at once.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import yaml

from dr.core.errors import ConfigError, NodeError, NodeUnreachable

LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/"
MAX_BODY = 64 << 20  # a NodeList of a few Nodes is kilobytes; refuse to buffer more than this


@dataclass(frozen=True)
class Target:
    server: str
    host: str
    port: int
    ca_pem: bytes
    crt_pem: bytes
    key_pem: bytes


class KubeAPI:
    def __init__(self, target: Target, *, timeout: float = 10.0):
        self.target = target
        self.timeout = timeout
        self._ctx = self._context(target)

    @staticmethod
    def parse_kubeconfig(text: str) -> Target:
        """The current context's server, CA and client certificate; ``ConfigError`` when one is missing."""
        try:
            doc = yaml.safe_load(text) or {}
            ctx_name = doc["current-context"]
            ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
            cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
            user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
            server = str(cluster["server"])
            ca = base64.b64decode(cluster["certificate-authority-data"], validate=True)
            crt = base64.b64decode(user["client-certificate-data"], validate=True)
            key = base64.b64decode(user["client-key-data"], validate=True)
        except (yaml.YAMLError, KeyError, TypeError, StopIteration, ValueError) as exc:
            # Name the missing key, never quote the file: a YAML error's text can carry a line of key material.
            detail = f"no {exc}" if isinstance(exc, KeyError) else type(exc).__name__
            raise ConfigError(f"the admin kubeconfig from the node is not usable ({detail})",
                              "check `talosctl kubeconfig` works against the node") from None
        url = urlsplit(server)
        if url.scheme != "https" or not url.hostname:
            raise ConfigError(f"the admin kubeconfig names server {server!r}, not an https:// URL",
                              "check the cluster endpoint in the machine config")
        return Target(server, url.hostname, url.port or 443, ca, crt, key)

    @classmethod
    def from_kubeconfig(cls, text: str, *, timeout: float = 10.0) -> KubeAPI:
        return cls(cls.parse_kubeconfig(text), timeout=timeout)

    @staticmethod
    def _context(t: Target) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=t.ca_pem.decode())
        with tempfile.TemporaryDirectory(prefix=".kubeapi-") as d:  # 0700
            crt, key = Path(d) / "crt", Path(d) / "key"
            for path, data in ((crt, t.crt_pem), (key, t.key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            try:
                ctx.load_cert_chain(str(crt), str(key))
            except ssl.SSLError as exc:
                raise ConfigError(f"the admin kubeconfig's client certificate or key cannot be loaded ({exc})",
                                  "check `talosctl kubeconfig` works against the node") from None
        return ctx

    def _call(self, method: str, path: str) -> tuple[int, dict]:
        where = f"the Kubernetes API at {self.target.server}"
        conn = http.client.HTTPSConnection(self.target.host, self.target.port, context=self._ctx,
                                           timeout=self.timeout)
        try:
            conn.request(method, path, headers={"Accept": "application/json"})
            resp = conn.getresponse()
            body = resp.read(MAX_BODY + 1)
        except ssl.SSLError as exc:
            raise NodeError(f"{where} refused the TLS connection ({exc})",
                            "check the kubeconfig belongs to this cluster") from None
        except (OSError, http.client.HTTPException) as exc:
            raise NodeUnreachable(f"{where} does not answer ({exc})",
                                  "check the node runs and that your IP may reach port 6443 (adminCidrs)") from None
        finally:
            conn.close()
        if len(body) > MAX_BODY:
            raise NodeError(f"{where} answered {method} {path} with more than {MAX_BODY >> 20} MiB", None)
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            doc = {}
        if resp.status >= 500:
            raise NodeUnreachable(f"{where} is not ready ({resp.status}: {doc.get('message', '')})",
                                  "it starts a little after etcd; wait and retry")
        if resp.status not in (200, 404):
            raise NodeError(f"{where} refused {method} {path}: {resp.status} {doc.get('message', '')}".rstrip(),
                            "the admin kubeconfig should allow it (group system:masters)")
        return resp.status, doc if isinstance(doc, dict) else {}

    def list_nodes(self) -> list[dict]:
        status, doc = self._call("GET", "/api/v1/nodes")
        items = doc.get("items") if status == 200 else None
        if not isinstance(items, list):
            raise NodeError(f"the Kubernetes API at {self.target.server} gave no NodeList", None)
        return [i for i in items if isinstance(i, dict)]

    def get_lease(self, name: str) -> dict | None:
        status, doc = self._call("GET", LEASES + quote(name, safe=""))
        return doc if status == 200 else None

    def delete_node(self, name: str) -> bool:
        """True when this call deleted it; False when it was already gone."""
        status, _ = self._call("DELETE", "/api/v1/nodes/" + quote(name, safe=""))
        return status == 200


def internal_ips(node: dict) -> list[str]:
    return [a.get("address", "") for a in (node.get("status") or {}).get("addresses") or []
            if isinstance(a, dict) and a.get("type") == "InternalIP"]


def node_addresses(node: dict) -> list[str]:
    """Every address the Node reports (InternalIP, ExternalIP, Hostname)."""
    return [str(a.get("address", "")) for a in (node.get("status") or {}).get("addresses") or []
            if isinstance(a, dict)]


def node_name(node: dict) -> str:
    return str((node.get("metadata") or {}).get("name", ""))
