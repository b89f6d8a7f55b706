"""dr.core.cert_expiry reads notAfter as cryptography does, from certificates the project mints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from dr.core.cert_expiry import CertificateFormatError, days_left, not_after
from dr.core.credentials import issue_certificate, mint_backup_credential, new_ca

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca():
    return new_ca("talos")


@pytest.mark.parametrize("end", [
    datetime(2027, 11, 24, 2, 0, 7, tzinfo=UTC),
    datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC),  # the last UTCTime year
    datetime(2050, 1, 1, 0, 0, tzinfo=UTC),  # GeneralizedTime from 2050 (RFC 5280 4.1.2.5)
])
def test_not_after_matches_cryptography(ca, end):
    cert, _ = issue_certificate(*ca, organization="os:etcd:backup", common_name="t", not_before=NOW, not_after=end)
    assert not_after(cert) == x509.load_pem_x509_certificate(cert).not_valid_after_utc == end


def test_the_schedules_credential_has_its_days_left(ca):
    creds = mint_backup_credential(*ca, NOW, cluster="c")
    end = x509.load_pem_x509_certificate(creds.cert_pem).not_valid_after_utc
    assert not_after(creds.cert_pem.decode()) == end  # str or bytes
    assert days_left(creds.cert_pem, end - timedelta(days=3)) == pytest.approx(3)
    assert days_left(creds.cert_pem, end + timedelta(days=1)) == pytest.approx(-1)
    assert not_after(ca[0]) == x509.load_pem_x509_certificate(ca[0]).not_valid_after_utc  # a CA (with extensions)


@pytest.mark.parametrize("pem", [b"", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                                 b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n"])
def test_garbage_is_a_format_error(pem):
    with pytest.raises(CertificateFormatError):
        not_after(pem)
