"""Certificates from dr.core.credentials chain to a CA shaped like Talos's real OS CA, checked by the real ``openssl verify``.

Talos's OS CA comes from siderolabs/crypto (v0.6.5 in siderolabs/talos v1.13.9's go.mod), whose
``x509/certificate_authority.go`` NewSelfSignedCertificateAuthority gives it a random 20-byte SubjectKeyIdentifier
(``x509/x509.go`` NewSubjectKeyID, ``rand.Read(skid)``, since v0.6.1). A certificate whose AuthorityKeyIdentifier is
derived from the CA's public key instead names no CA, and OpenSSL refuses it.
"""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dr.core import credentials as cr
from tests.x509check import aki_of, assert_apid_accepts_as_client, assert_verifies, openssl_verify, ski_of

NOW = datetime.now(UTC)


def talos_os_ca(*, ski: bool = True) -> tuple[bytes, bytes]:
    """An OS CA built here, independently of dr.core.credentials, from siderolabs/crypto v0.6.4's template
    (NewSelfSignedCertificateAuthority + Ed25519CertificateAuthority; Talos's NewTalosCA passes Organization "talos"):
    Ed25519, random 20-byte SKI, KeyUsage certSign|digitalSignature, EKU serverAuth+clientAuth, no AKI (Go writes none
    on a self-signed certificate), key as PKCS#8 under ``ED25519 PRIVATE KEY`` (``x509/key.go`` NewEd25519Key)."""
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "talos")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    )
    if ski:
        builder = builder.add_extension(x509.SubjectKeyIdentifier(os.urandom(20)), critical=False)
    cert = builder.sign(key, None)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    key_pem = b"-----BEGIN ED25519 PRIVATE KEY-----\n" + base64.encodebytes(der) + b"-----END ED25519 PRIVATE KEY-----\n"
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(scope="module")
def os_ca() -> tuple[bytes, bytes]:
    return talos_os_ca()


def test_backup_credential_verifies_against_a_random_ski_ca(os_ca, tmp_path):
    creds = cr.mint_backup_credential(*os_ca, NOW, cluster="c")
    assert_verifies(tmp_path, os_ca[0], creds.cert_pem, "-purpose", "sslclient")
    assert_apid_accepts_as_client(creds.cert_pem)
    assert cr.certificate_roles(creds.cert_pem) == [cr.BACKUP_ROLE]


def test_minting_stays_deterministic_under_a_random_ski_ca(os_ca):
    a = cr.mint_backup_credential(*os_ca, NOW, cluster="c")
    assert a == cr.mint_backup_credential(*os_ca, NOW + timedelta(days=1), cluster="c")


def test_admin_and_server_certificates_verify(os_ca, tmp_path):
    admin, _ = cr.issue_certificate(
        *os_ca, organization=["os:admin"], common_name="admin", not_before=NOW - timedelta(hours=1),
        not_after=NOW + timedelta(days=1), key=ed25519.Ed25519PrivateKey.generate(),
    )
    assert_verifies(tmp_path, os_ca[0], admin, "-purpose", "sslclient")
    assert_apid_accepts_as_client(admin)
    server, _ = cr.issue_certificate(
        *os_ca, organization=None, common_name="node", not_before=NOW - timedelta(hours=1),
        not_after=NOW + timedelta(days=1), server_ips=("127.0.0.1",), client=False,
    )
    assert_verifies(tmp_path, os_ca[0], server, "-purpose", "sslserver", "-verify_ip", "127.0.0.1")


def test_authority_key_id_is_the_issuers_subject_key_id(os_ca):
    creds = cr.mint_backup_credential(*os_ca, NOW, cluster="c")
    aki = aki_of(creds.cert_pem)
    assert aki.key_identifier == ski_of(os_ca[0])
    assert aki.authority_cert_issuer is None and aki.authority_cert_serial_number is None  # as Go writes it


def test_issuer_without_ski_falls_back_to_the_public_key(tmp_path):
    ca = talos_os_ca(ski=False)
    creds = cr.mint_backup_credential(*ca, NOW, cluster="c")
    ca_key = x509.load_pem_x509_certificate(ca[0]).public_key()
    assert aki_of(creds.cert_pem) == x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key)  # type: ignore[arg-type]
    assert_verifies(tmp_path, ca[0], creds.cert_pem, "-purpose", "sslclient")


def test_an_aki_from_the_public_key_is_what_openssl_rejects(os_ca, tmp_path):
    """The failure this guards against, reproduced: the same certificate with the AKI derived from the key."""
    good = x509.load_pem_x509_certificate(cr.mint_backup_credential(*os_ca, NOW, cluster="c").cert_pem)
    ca_cert = x509.load_pem_x509_certificate(os_ca[0])
    builder = (
        x509.CertificateBuilder().subject_name(good.subject).issuer_name(good.issuer).public_key(good.public_key())
        .serial_number(good.serial_number).not_valid_before(good.not_valid_before_utc)
        .not_valid_after(good.not_valid_after_utc)
    )
    for ext in good.extensions:
        if not isinstance(ext.value, x509.AuthorityKeyIdentifier):
            builder = builder.add_extension(ext.value, ext.critical)
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False  # type: ignore[arg-type]
    )
    bad = builder.sign(cr.load_private_key(os_ca[1]), None).public_bytes(serialization.Encoding.PEM)
    r = openssl_verify(tmp_path, os_ca[0], bad, "-purpose", "sslclient")
    assert r.returncode != 0 and "unable to get local issuer certificate" in r.stdout + r.stderr


def test_new_ca_is_shaped_like_talos_and_chains(tmp_path):
    ca = cr.new_ca("talos")
    cert = x509.load_pem_x509_certificate(ca[0])
    assert len(ski_of(ca[0])) == 20
    assert ski_of(ca[0]) != x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    assert isinstance(cert.public_key(), ed25519.Ed25519PublicKey)
    assert cert.subject.rfc4514_string() == "O=talos"
    assert b"-----BEGIN ED25519 PRIVATE KEY-----" in ca[1]
    creds = cr.mint_backup_credential(*ca, NOW, cluster="c")
    assert_verifies(tmp_path, ca[0], creds.cert_pem, "-purpose", "sslclient")
    ecdsa = cr.new_ca("etcd", key_type="ecdsa")
    assert b"-----BEGIN EC PRIVATE KEY-----" in ecdsa[1]  # siderolabs/crypto x509/key.go NewECDSAKey framing
    leaf, _ = cr.issue_certificate(*ecdsa, organization="o", common_name="c", not_before=NOW - timedelta(hours=1),
                                   not_after=NOW + timedelta(days=1))
    assert_verifies(tmp_path, ecdsa[0], leaf, "-purpose", "sslclient")
