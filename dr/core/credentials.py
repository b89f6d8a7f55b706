"""Least-privilege Talos client certificates, minted from the OS CA in the stack's machine secrets, and the one
certificate factory the sandbox and the tests share with them.

The schedule's credential is a client certificate whose Organization is ``os:etcd:backup``. apid lets that role call
EtcdSnapshot, EtcdAlarmList, EtcdMemberList and EtcdStatus, and nothing else: not Version, not EtcdRecover, Bootstrap,
Reset or Kubeconfig (siderolabs/talos v1.13.9 ``internal/app/machined/pkg/system/services/machined.go``, the
``rules`` map at :40-132: EtcdBackup appears at :69, :74, :77, :78 only; Version at :113 is Admin, Operator, Reader).
It is minted *deterministically*:

* its ECDSA P-256 key is derived with HKDF from the OS CA key and the validity period's start, and
* the CA's Ed25519 signature is deterministic (RFC 6979 deterministic ECDSA for an ECDSA CA), serial and dates
  come from the same inputs,

so every ``pulumi up`` within one rotation period computes byte-identical PEM — no diff, no new secret version,
nothing to keep in extra state — and a new period (every ``ROTATION``) rotates it, with the old certificate still
valid for ``VALIDITY - ROTATION`` more. Deriving from the CA key gives nothing away: whoever holds the CA key can
mint any certificate already.

The factory: ``issue_certificate`` signs every leaf certificate (this credential, the sandbox's admin and kubeconfig
certificates, the simulated apid's server certificate) and ``new_ca`` makes CAs shaped like the ones Talos generates
(siderolabs/crypto ``x509/certificate_authority.go`` NewSelfSignedCertificateAuthority), for the sandbox and tests.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dr.core.errors import ConfigError
from dr.core.talos_credentials import TalosCredentials, pem_bytes

BACKUP_ROLE = "os:etcd:backup"
ROTATION = timedelta(days=180)
VALIDITY = timedelta(days=365)
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_SKEW = timedelta(hours=1)  # not_before a little early: a node clock slightly behind must still accept it
_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\s*(.+?)\s*-----END \1-----", re.S)


def load_private_key(pem: bytes) -> Any:
    """Load a PEM private key, including Talos's ``ED25519 PRIVATE KEY`` blocks (PKCS#8 DER under a label
    ``cryptography`` does not know)."""
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        pass
    m = _PEM_RE.search(pem)
    if not m:
        raise ConfigError("the OS CA key is not a PEM private key")
    try:
        return serialization.load_der_private_key(base64.b64decode(b"".join(m.group(2).split())), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the OS CA key ({m.group(1).decode()}) cannot be read: {exc}") from exc


def os_ca_from_machine_secrets(machine_secrets: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(CA certificate PEM, CA key PEM) of the OS CA in a pulumiverse-talos ``machine_secrets`` value.

    ``certs.os.cert`` and ``certs.os.key`` are base64 of PEM there (as in Talos's secrets bundle).
    """
    try:
        os_ca = machine_secrets["certs"]["os"]
        cert, key = os_ca["cert"], os_ca["key"]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"machine secrets have no certs.os.cert/key ({exc})", "pass talos.machine.Secrets(...).machine_secrets") from exc
    return pem_bytes(cert, "machine secrets certs.os.cert"), pem_bytes(key, "machine secrets certs.os.key")


def _sign(builder: x509.CertificateBuilder, key: Any) -> x509.Certificate:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return builder.sign(key, None)  # Ed25519 is deterministic by design
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)  # RFC 6979
    return builder.sign(key, hashes.SHA256())


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _talos_key_pem(key: Any) -> bytes:
    """A private key framed as siderolabs/crypto writes it (``x509/key.go``): Ed25519 as PKCS#8 DER under the label
    ``ED25519 PRIVATE KEY``, ECDSA as SEC1 ``EC PRIVATE KEY``."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        body = base64.encodebytes(key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )).replace(b"\n", b"")
        return b"-----BEGIN ED25519 PRIVATE KEY-----\n" + body + b"\n-----END ED25519 PRIVATE KEY-----\n"
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_usage(*, digital_signature: bool, key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: Any,
    *,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    is_ca: bool,
    usages: Sequence[x509.ObjectIdentifier],
) -> x509.CertificateBuilder:
    """What every certificate here has in common: names, key, serial, dates, basic constraints, key usage, EKU."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_cert_sign=is_ca), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    )


def authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The AuthorityKeyIdentifier of a certificate ``issuer`` signs: the issuer's own SubjectKeyIdentifier.

    That is what Go's ``x509.CreateCertificate`` writes (``authorityKeyId = parent.SubjectKeyId``), so Talos's own
    certificates carry it. It cannot be recomputed from the CA's public key: siderolabs/crypto >= v0.6.1 gives every
    CA 20 random bytes as its SKI (``x509/x509.go`` NewSubjectKeyID, ``rand.Read(skid)``; used by
    ``x509/certificate_authority.go`` NewSelfSignedCertificateAuthority), and OpenSSL will not pick an issuer whose SKI
    differs from the AKI ("unable to get local issuer certificate"). Only an issuer without an SKI gets the
    public-key derivation (RFC 5280 4.2.1.2 method 1).
    """
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def issue_certificate(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    *,
    organization: str | Sequence[str] | None,
    common_name: str,
    not_before: datetime,
    not_after: datetime,
    key: Any = None,
    serial: int | None = None,
    server_ips: tuple[str, ...] = (),
    client: bool = True,
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) signed by the CA. ``organization`` is one role or several (one Organization value
    each, as Talos writes roles); ``server_ips`` makes a server certificate with IP SANs.

    A client certificate (``client=True``, no ``server_ips``) has exactly one EKU, clientAuth, as apid demands of
    every non-CA certificate in the chain (``internal/app/apid/service.go:172-190`` verifyExtKeyUsage,
    ``slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})``); adding ``server_ips`` to it
    adds serverAuth, which apid would then refuse from a client.

    The leaf key defaults to ECDSA P-256, not Ed25519: gRPC's TLS stack (BoringSSL inside grpcio) cannot sign or
    verify Ed25519 handshakes (grpc/grpc#24252), while Talos's Go apid accepts ECDSA client certificates. The CA's
    own key may be Ed25519 (Talos's default): certificate signatures are checked by X.509 path validation, which
    handles Ed25519.
    """
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = load_private_key(ca_key_pem)
    key = key or ec.generate_private_key(ec.SECP256R1())
    orgs = [organization] if isinstance(organization, str) else list(organization or ())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    if server_ips:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    builder = _builder(
        x509.Name(attrs), ca_cert.subject, key.public_key(), serial=serial or x509.random_serial_number(),
        not_before=not_before, not_after=not_after, is_ca=False, usages=usages,
    ).add_extension(authority_key_identifier(ca_cert), critical=False)
    if server_ips:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]), critical=False
        )
    return _cert_pem(_sign(builder, ca_key)), _key_pem(key)


def new_ca(
    organization: str | None = "talos",
    *,
    common_name: str | None = None,
    now: datetime | None = None,
    days: int = 3650,
    key_type: Literal["ed25519", "ecdsa"] = "ed25519",
) -> tuple[bytes, bytes]:
    """A self-signed CA shaped like the ones Talos generates: (certificate PEM, key PEM in siderolabs/crypto's
    framing). For the sandbox and tests; production only ever signs with the cluster's own OS CA.

    As in siderolabs/crypto v0.6.4 ``x509/certificate_authority.go`` NewSelfSignedCertificateAuthority: a random
    20-byte SubjectKeyIdentifier (NewSubjectKeyID), key usage certSign + digitalSignature, EKU serverAuth +
    clientAuth, Ed25519 by default (``ecdsa`` for Talos's etcd and Kubernetes CAs, P-256). Talos's OS CA is
    ``new_ca("talos")`` (``pkg/machinery/config/generate/secrets/ca.go`` NewTalosCA: Organization "talos", no CN).
    """
    now = now or datetime.now(UTC)
    key = ed25519.Ed25519PrivateKey.generate() if key_type == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)] if organization else []
    if common_name:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    name = x509.Name(attrs)
    builder = _builder(
        name, name, key.public_key(), serial=x509.random_serial_number(), not_before=now - _SKEW,
        not_after=now + timedelta(days=days), is_ca=True,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    ).add_extension(x509.SubjectKeyIdentifier(os.urandom(20)), critical=False)
    return _cert_pem(_sign(builder, key)), _talos_key_pem(key)


@dataclass(frozen=True)
class Period:
    start: datetime
    not_before: datetime
    not_after: datetime


def rotation_period(now: datetime, ca_not_after: datetime | None = None) -> Period:
    """The rotation period ``now`` falls in. Pure: the clock is an argument."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    index = (now - _EPOCH) // ROTATION
    start = _EPOCH + index * ROTATION
    not_after = start + VALIDITY
    if ca_not_after is not None:
        not_after = min(not_after, ca_not_after)
    return Period(start=start, not_before=start - _SKEW, not_after=not_after)


def mint_backup_credential(
    ca_cert_pem: bytes, ca_key_pem: bytes, now: datetime, *, role: str = BACKUP_ROLE, cluster: str = "talos"
) -> TalosCredentials:
    """The schedule's client credential for the period ``now`` falls in: same inputs, same bytes (see module doc)."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = load_private_key(ca_key_pem)
    period = rotation_period(now, ca_cert.not_valid_after_utc)
    if period.not_after <= now:
        raise ConfigError("the OS CA has expired; a certificate it signs would not be accepted", "rotate the Talos OS CA")
    ca_secret = ca_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    info = f"talos-dr|{role}|{cluster}|{period.start:%Y%m%dT%H%M%SZ}".encode()
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=b"talos-dr client credential", info=info).derive(ca_secret)
    # ECDSA P-256 (see issue_certificate): a scalar in [1, n-1] from 48 bytes of HKDF output (bias < 2**-128).
    key = ec.derive_private_key(int.from_bytes(okm[:48], "big") % (_P256_ORDER - 1) + 1, ec.SECP256R1())
    serial = int.from_bytes(okm[48:], "big") >> 1 or 1  # positive, < 2**127
    cert_pem, key_pem = issue_certificate(
        ca_cert_pem,
        ca_key_pem,
        organization=role,
        common_name=f"talos-dr-etcd-backup.{cluster}",
        not_before=period.not_before,
        not_after=period.not_after,
        key=key,
        serial=serial,
    )
    return TalosCredentials(ca_pem=ca_cert_pem, cert_pem=cert_pem, key_pem=key_pem)


def certificate_roles(cert_pem: bytes) -> list[str]:
    """The Organization values (Talos roles) of a PEM certificate."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    # Organization is text; cryptography types every attribute value as str | bytes (bytes only for bit strings).
    values = (a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    return [v.decode() if isinstance(v, bytes) else v for v in values]
