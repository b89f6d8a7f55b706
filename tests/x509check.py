"""Certificate checks shared by the PKI tests: the real ``openssl verify``, key ids, apid's EKU rule."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID


def openssl() -> str:
    """The openssl CLI; fails under CI=true (CI must not pass by skipping), skips elsewhere."""
    path = shutil.which("openssl")
    if path:
        return path
    msg = "openssl not found on PATH (apt-get install openssl)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg)
    pytest.skip(msg)


def openssl_verify(tmp_path: Path, ca_pem: bytes, cert_pem: bytes, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    return subprocess.run(
        [openssl(), "verify", "-CAfile", str(tmp_path / "ca.pem"), *args, str(tmp_path / "cert.pem")],
        capture_output=True, text=True, timeout=30,
    )


def assert_verifies(tmp_path: Path, ca_pem: bytes, cert_pem: bytes, *args: str) -> None:
    r = openssl_verify(tmp_path, ca_pem, cert_pem, *args)
    assert r.returncode == 0 and r.stdout.strip().endswith(": OK"), (r.stdout, r.stderr)


def ski_of(cert_pem: bytes) -> bytes:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def aki_of(cert_pem: bytes) -> x509.AuthorityKeyIdentifier:
    return x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value


def assert_apid_accepts_as_client(cert_pem: bytes) -> None:
    """apid's own check on top of TLS (siderolabs/talos v1.13.9 ``internal/app/apid/service.go:172-190``,
    verifyExtKeyUsage, always installed at :54): every non-CA certificate in the chain has exactly one EKU,
    clientAuth."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
