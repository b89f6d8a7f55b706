"""ClusterReady's provider against a real HTTPS server on loopback that requires a client certificate, as the
Kubernetes API server does: ``/readyz`` answers 503 a few times, then 200. Plus its diff, check and serialization."""

from __future__ import annotations

import base64
import http.server
import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dill
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc

from infra.providers import cluster_ready as cr


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Pki:
    """A Kubernetes-shaped CA (ECDSA, as Talos makes it), a serving certificate for 127.0.0.1 and an admin client
    certificate (O=system:masters)."""

    def __init__(self, cn: str = "kubernetes", server_ip: str = "127.0.0.1"):
        import ipaddress

        now = datetime.now(UTC)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
                   .public_key(self.ca_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(self.ca_key, hashes.SHA256()))

        def leaf(subject, eku, san=None):
            key = ec.generate_private_key(ec.SECP256R1())
            b = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.ca.subject)
                 .public_key(key.public_key()).serial_number(x509.random_serial_number())
                 .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
                 .add_extension(x509.ExtendedKeyUsage([eku]), critical=False))
            if san:
                b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
            return b.sign(self.ca_key, hashes.SHA256()), key

        self.server_cert, self.server_key = leaf(_name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH,
                                                 [x509.IPAddress(ipaddress.ip_address(server_ip))])
        self.client_cert, self.client_key = leaf(_name("admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH)

    def pem(self, cert) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def kubeconfig(self, server: str, ca_pem: bytes | None = None) -> str:
        b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
        return yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "admin@talos-dr",
            "clusters": [{"name": "talos-dr", "cluster": {
                "server": server, "certificate-authority-data": b64(ca_pem or self.pem(self.ca))}}],
            "users": [{"name": "admin@talos-dr", "user": {
                "client-certificate-data": b64(self.pem(self.client_cert)),
                "client-key-data": b64(_pem_key(self.client_key))}}],
            "contexts": [{"name": "admin@talos-dr", "context": {"cluster": "talos-dr", "user": "admin@talos-dr"}}],
        })


class ReadyzServer:
    """HTTPS on a free loopback port; mutual TLS (client certificate required, signed by the CA); ``/readyz``
    answers 503 ``not_ready`` times, then 200 ``ok``. Records the client certificate's subject per request."""

    def __init__(self, pki: Pki, tmp: Path, not_ready: int = 2):
        self.not_ready = not_ready
        self.requests: list[tuple[str, str]] = []  # (path, client subject)
        (tmp / "srv.crt").write_bytes(pki.pem(pki.server_cert))
        (tmp / "srv.key").write_bytes(_pem_key(pki.server_key))
        (tmp / "ca.crt").write_bytes(pki.pem(pki.ca))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tmp / "srv.crt", tmp / "srv.key")
        ctx.load_verify_locations(tmp / "ca.crt")
        ctx.verify_mode = ssl.CERT_REQUIRED
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                peer = self.connection.getpeercert() or {}
                subject = ",".join(f"{k}={v}" for rdn in peer.get("subject", ()) for k, v in rdn)
                owner.requests.append((self.path, subject))
                ready = self.path == cr.READYZ_PATH and len(owner.requests) > owner.not_ready
                body = b"ok" if ready else b"[-]etcd failed: reason withheld\nreadyz check failed"
                self.send_response(200 if ready else 503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def pki():
    return Pki()


def props(kubeconfig: str, **over):
    return {"kubeconfig": kubeconfig, "node_identity": "i-0abc", "timeout_seconds": 20, "poll_seconds": 0.05,
            "server": None, "attempts": None, **over}


def test_create_waits_through_503_until_readyz_answers_200(pki, tmp_path):
    with ReadyzServer(pki, tmp_path, not_ready=3) as srv:
        res = cr.ClusterReadyProvider().create(props(pki.kubeconfig(srv.url)))
    assert [path for path, _ in srv.requests] == [cr.READYZ_PATH] * 4, "stops at the first 200"
    assert all("O=system:masters" in subj or "organizationName=system:masters" in subj for _, subj in srv.requests), \
        f"every probe presents the kubeconfig's client certificate: {srv.requests}"
    assert res.outs["attempts"] == 4 and res.outs["server"] == srv.url and res.outs["node_identity"] == "i-0abc"
    assert "kubeconfig" not in res.outs, "the kubeconfig stays a (secret) input, never a plain output"
    assert res.id == f"{srv.url}/readyz"


def test_create_times_out_with_one_clear_line(pki, tmp_path):
    with ReadyzServer(pki, tmp_path, not_ready=10**6) as srv, pytest.raises(cr.ClusterNotReady) as info:
        cr.ClusterReadyProvider().create(props(pki.kubeconfig(srv.url), timeout_seconds=0.5, poll_seconds=0.1))
    msg = str(info.value)
    assert "\n" not in msg
    assert f"{srv.url}/readyz did not answer 200 within 0s" in msg or f"{srv.url}/readyz did not answer 200 within 1s" in msg
    assert "last: HTTP 503 [-]etcd failed" in msg and "pulumi up" in msg and "adminCidrs" in msg
    assert len(srv.requests) >= 2, "it kept polling until the deadline"


def test_nothing_listening_is_retried_until_the_deadline(pki):
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(cr.ClusterNotReady, match=r"ConnectionRefusedError"):
        cr.ClusterReadyProvider().create(props(pki.kubeconfig(f"https://127.0.0.1:{port}"),
                                               timeout_seconds=0.3, poll_seconds=0.05))


def test_a_server_certificate_from_another_ca_fails_at_once(pki, tmp_path):
    other = Pki(cn="someone-else")
    with ReadyzServer(pki, tmp_path, not_ready=0) as srv, pytest.raises(cr.ClusterNotReady) as info:
        cr.ClusterReadyProvider().create(props(pki.kubeconfig(srv.url, ca_pem=other.pem(other.ca)),
                                               timeout_seconds=30))
    assert "does not verify against the kubeconfig's CA" in str(info.value)
    assert srv.requests == [], "no request is sent to a server that did not verify"


def test_wait_is_bounded_by_the_clock_not_by_attempts(pki, tmp_path):
    now = [0.0]
    slept: list[float] = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    with ReadyzServer(pki, tmp_path, not_ready=10**6) as srv, pytest.raises(cr.ClusterNotReady, match="within 1m00s"):
        cr.wait_until_ready(cr.kubeconfig_access(pki.kubeconfig(srv.url)), 60, 5, clock=lambda: now[0], sleep=sleep)
    assert slept == [5] * 12 and len(srv.requests) == 13, "one probe at t=0, 5, ..., 60 s, none after the deadline"


def test_diff_replaces_only_for_a_new_instance():
    p = cr.ClusterReadyProvider()
    olds = {"node_identity": "i-0abc", "server": "https://198.51.100.7:6443", "attempts": 3,
            "timeout_seconds": 1200, "poll_seconds": 5}
    same = p.diff("id", olds, {**props("renewed kubeconfig"), "timeout_seconds": 60})
    assert same.changes is False and same.replaces == [], "a renewed kubeconfig or timeout never blocks an up"
    new = p.diff("id", olds, props("k", node_identity="i-0new"))
    assert new.changes is True and new.replaces == ["node_identity"]
    planned = p.diff("id", olds, props("k", node_identity=rpc.UNKNOWN))  # preview of an instance replacement
    assert planned.replaces == ["node_identity"]


def test_read_and_update_never_touch_the_network():
    p = cr.ClusterReadyProvider()
    olds = {"node_identity": "i-0abc", "server": "https://192.0.2.1:1", "attempts": 3}
    assert p.read("id", olds).outs == olds
    assert p.update("id", olds, props("k")).outs["attempts"] == 3


def test_check_rejects_bad_inputs_and_accepts_unknowns():
    p = cr.ClusterReadyProvider()
    bad = p.check({}, props("", timeout_seconds=0, poll_seconds="5"))
    assert {f.property for f in bad.failures} == {"kubeconfig", "timeout_seconds", "poll_seconds"}
    assert p.check({}, props(rpc.UNKNOWN)).failures == []


@pytest.mark.parametrize("doc,words", [
    ("not: [yaml", "not YAML"),
    ("apiVersion: v1\n", "no context"),
    (yaml.safe_dump({"current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                     "clusters": [{"name": "c", "cluster": {"server": "https://1.2.3.4:6443"}}],
                     "users": [{"name": "u", "user": {"token": "t"}}]}), "lacks a server, CA or client certificate"),
])
def test_unusable_kubeconfig_is_a_clear_error(doc, words):
    with pytest.raises(cr.ClusterNotReady, match=words):
        cr.kubeconfig_access(doc)


def test_provider_pickles_by_reference():
    blob = base64.b64decode(serialize_provider(cr.ClusterReadyProvider()))
    assert b"infra.providers.cluster_ready" in blob and len(blob) < 1000
    assert type(dill.loads(blob)) is cr.ClusterReadyProvider
