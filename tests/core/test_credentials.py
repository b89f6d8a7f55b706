"""dr.core.credentials: the deterministic os:etcd:backup certificate, Talos's key framing, machine-secrets shape."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from dr.core import credentials as cr
from dr.core.errors import ConfigError

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca():
    return cr.new_ca("talos", now=NOW - timedelta(days=400))


def test_same_period_same_bytes(ca):
    a = cr.mint_backup_credential(*ca, NOW, cluster="c")
    b = cr.mint_backup_credential(*ca, NOW + timedelta(days=10), cluster="c")
    assert a == b  # `pulumi up` ten days later: identical secret, no diff


def test_new_period_rotates_with_overlap(ca):
    a = cr.mint_backup_credential(*ca, NOW, cluster="c")
    p = cr.rotation_period(NOW)
    b = cr.mint_backup_credential(*ca, p.start + cr.ROTATION, cluster="c")
    assert a.cert_pem != b.cert_pem and a.key_pem != b.key_pem
    ca_ = x509.load_pem_x509_certificate(a.cert_pem)
    cb = x509.load_pem_x509_certificate(b.cert_pem)
    assert ca_.not_valid_after_utc > cb.not_valid_before_utc  # the old one still works while the new one rolls out
    assert cr.mint_backup_credential(*ca, NOW, cluster="other").cert_pem != a.cert_pem


def test_certificate_is_a_backup_client_cert_signed_by_the_os_ca(ca):
    creds = cr.mint_backup_credential(*ca, NOW, cluster="c")
    cert = x509.load_pem_x509_certificate(creds.cert_pem)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca[0]))
    assert cr.certificate_roles(creds.cert_pem) == ["os:etcd:backup"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_before_utc <= NOW < cert.not_valid_after_utc
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= cr.VALIDITY + timedelta(hours=1)


def test_talos_key_framing_and_machine_secrets_shape(ca):
    assert b"-----BEGIN ED25519 PRIVATE KEY-----" in ca[1]
    assert cr.load_private_key(ca[1]) is not None
    ms = {"certs": {"os": {"cert": base64.b64encode(ca[0]).decode(), "key": base64.b64encode(ca[1]).decode()}}}
    assert cr.os_ca_from_machine_secrets(ms) == ca
    with pytest.raises(ConfigError):
        cr.os_ca_from_machine_secrets({"certs": {}})
    with pytest.raises(ConfigError):
        cr.os_ca_from_machine_secrets({"certs": {"os": {"cert": "OSCRT", "key": "OSKEY"}}})


def test_expired_ca_is_refused():
    old = cr.new_ca("talos", now=NOW - timedelta(days=40), days=30)
    with pytest.raises(ConfigError) as ei:
        cr.mint_backup_credential(*old, NOW)
    assert "expired" in ei.value.message
