"""When a PEM certificate expires, read without ``cryptography`` (the snapshot Lambda does not ship it).

X.509 (RFC 5280 section 4.1): ``Certificate ::= SEQUENCE { tbsCertificate, ... }`` and ``TBSCertificate ::= SEQUENCE
{ [0] version OPTIONAL, serialNumber INTEGER, signature AlgorithmIdentifier, issuer Name, validity Validity, ... }``,
``Validity ::= SEQUENCE { notBefore Time, notAfter Time }``, ``Time ::= CHOICE { UTCTime, GeneralizedTime }``
(4.1.2.5: UTCTime years 50-99 are 19xx, 00-49 are 20xx; both end in ``Z``). Only DER's definite lengths occur.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)
_SEQUENCE, _UTC_TIME, _GENERALIZED_TIME, _VERSION = 0x30, 0x17, 0x18, 0xA0


class CertificateFormatError(ValueError):
    """The bytes are not a PEM X.509 certificate this parser can read."""


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at ``pos``."""
    if pos + 2 > len(der):
        raise CertificateFormatError("truncated DER")
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(der):
            raise CertificateFormatError("bad DER length")
        length = int.from_bytes(der[pos:pos + n], "big")
        pos += n
    if pos + length > len(der):
        raise CertificateFormatError("truncated DER")
    return tag, pos, pos + length


def _time(tag: int, value: bytes) -> datetime:
    text = value.decode("ascii")
    if tag == _UTC_TIME:
        ts = datetime.strptime(text, "%y%m%d%H%M%SZ")  # strptime's %y maps 69-99 to 19xx; RFC 5280 says 50-99
        year = ts.year % 100
        ts = ts.replace(year=(1900 if year >= 50 else 2000) + year)
    elif tag == _GENERALIZED_TIME:
        ts = datetime.strptime(text, "%Y%m%d%H%M%SZ")
    else:
        raise CertificateFormatError(f"validity time has tag {tag:#x}, not UTCTime or GeneralizedTime")
    return ts.replace(tzinfo=UTC)


def not_after(cert_pem: bytes | str) -> datetime:
    """The ``notAfter`` of the first certificate in ``cert_pem`` (UTC). Raises ``CertificateFormatError``."""
    raw = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    m = _PEM.search(raw)
    if not m:
        raise CertificateFormatError("no PEM CERTIFICATE block")
    try:
        der = base64.b64decode(b"".join(m.group(1).split()), validate=True)
        tag, start, _ = _tlv(der, 0)  # Certificate
        if tag != _SEQUENCE:
            raise CertificateFormatError("not a certificate")
        tag, pos, _ = _tlv(der, start)  # tbsCertificate
        if tag != _SEQUENCE:
            raise CertificateFormatError("no tbsCertificate")
        tag, _, end = _tlv(der, pos)
        if tag == _VERSION:
            pos = end
        for _field in ("serialNumber", "signature", "issuer"):
            pos = _tlv(der, pos)[2]
        tag, vpos, _ = _tlv(der, pos)  # validity
        if tag != _SEQUENCE:
            raise CertificateFormatError("no validity")
        vpos = _tlv(der, vpos)[2]  # notBefore
        tag, start, end = _tlv(der, vpos)
        return _time(tag, der[start:end])
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, CertificateFormatError):
            raise
        raise CertificateFormatError(f"unreadable certificate: {exc}") from exc


def days_left(cert_pem: bytes | str, now: datetime) -> float:
    """Days from ``now`` until the certificate expires (negative once it has)."""
    return (not_after(cert_pem) - now).total_seconds() / 86400
