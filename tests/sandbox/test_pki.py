"""sandbox.pki: the sandbox's CAs look like Talos's (random 20-byte SKI) and its certificates chain to them."""

from __future__ import annotations

import base64

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from sandbox.pki import ClusterSecrets, verify_client_cert
from tests.x509check import aki_of, assert_apid_accepts_as_client, assert_verifies, ski_of


def _os_ca(s: ClusterSecrets) -> bytes:
    return base64.b64decode(s.os_ca_crt)


def test_each_ca_has_its_own_random_20_byte_ski():
    a, b = ClusterSecrets.generate("a"), ClusterSecrets.generate("b")
    assert len(ski_of(_os_ca(a))) == 20 and ski_of(_os_ca(a)) != ski_of(_os_ca(b))
    for name in ("os", "k8s", "k8saggregator", "etcd"):
        assert len(ski_of(base64.b64decode(a.bundle["certs"][name]["crt"]))) == 20, name
    key = x509.load_pem_x509_certificate(_os_ca(a)).public_key()
    assert ski_of(_os_ca(a)) != x509.SubjectKeyIdentifier.from_public_key(key).digest


def test_os_ca_and_key_are_framed_like_talos():
    s = ClusterSecrets.generate("c")
    ca = x509.load_pem_x509_certificate(_os_ca(s))
    assert isinstance(ca.public_key(), ed25519.Ed25519PublicKey) and ca.subject.rfc4514_string() == "O=talos"
    assert base64.b64decode(s.os_ca_key).startswith(b"-----BEGIN ED25519 PRIVATE KEY-----")


def test_talosconfig_admin_certificate_chains_and_passes_apid(tmp_path):
    s = ClusterSecrets.generate("c")
    ctx = yaml.safe_load(s.talosconfig("127.0.0.1"))["contexts"]["c"]
    crt = base64.b64decode(ctx["crt"])
    assert_verifies(tmp_path, _os_ca(s), crt, "-purpose", "sslclient")
    assert_apid_accepts_as_client(crt)
    assert aki_of(crt).key_identifier == ski_of(_os_ca(s))
    assert isinstance(x509.load_pem_x509_certificate(crt).public_key(), ed25519.Ed25519PublicKey)  # like gen config
    assert verify_client_cert(_os_ca(s), crt) == ["os:admin"]
    assert verify_client_cert(_os_ca(ClusterSecrets.generate("c")), crt) is None  # another cluster's CA


def test_roles_are_one_organization_each():
    s = ClusterSecrets.generate("c")
    crt = base64.b64decode(yaml.safe_load(s.talosconfig("127.0.0.1", roles=["os:reader", "os:etcd:backup"]))
                           ["contexts"]["c"]["crt"])
    assert verify_client_cert(_os_ca(s), crt) == ["os:reader", "os:etcd:backup"]


def test_kubeconfig_client_certificate_chains_to_the_kubernetes_ca(tmp_path):
    s = ClusterSecrets.generate("c")
    user = yaml.safe_load(s.kubeconfig("https://127.0.0.1:6443"))["users"][0]["user"]
    crt = base64.b64decode(user["client-certificate-data"])
    k8s_ca = base64.b64decode(s.bundle["certs"]["k8s"]["crt"])
    assert_verifies(tmp_path, k8s_ca, crt, "-purpose", "sslclient")
    eku = x509.load_pem_x509_certificate(crt).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
