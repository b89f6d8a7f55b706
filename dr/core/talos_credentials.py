"""A Talos client credential as data: the OS CA (to trust apid), the client certificate and key. No crypto library:
the scheduled-snapshot Lambda imports this without ``cryptography``."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from dr.core.errors import ConfigError


@dataclass(frozen=True)
class TalosCredentials:
    """PEM bytes of the OS CA (to trust apid) and the client certificate and key apid checks."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    def to_json(self) -> str:
        """The JSON stored in Secrets Manager: ``{"ca", "crt", "key"}`` as PEM text (a talosconfig context's shape,
        without its base64)."""
        return json.dumps({"ca": self.ca_pem.decode(), "crt": self.cert_pem.decode(), "key": self.key_pem.decode()})

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "credential") -> TalosCredentials:
        """Parse ``to_json`` output; also accepts base64-encoded PEM values, as a talosconfig context holds them."""
        try:
            doc = json.loads(text)
            values = [doc["ca"], doc["crt"], doc["key"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{where} is not a Talos client credential (want JSON with ca, crt, key): {exc}",
                "re-run `pulumi up` to rewrite the secret",
            ) from exc
        return cls(*(pem_bytes(v, where) for v in values))


def pem_bytes(value: str | bytes, where: str) -> bytes:
    """PEM bytes from a value that is PEM or base64 of PEM (Talos stores both forms)."""
    raw = value.encode() if isinstance(value, str) else value
    if b"-----BEGIN" in raw:
        return raw
    try:
        decoded = base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise ConfigError(f"{where} holds a value that is neither PEM nor base64 PEM") from exc
    if b"-----BEGIN" not in decoded:
        raise ConfigError(f"{where} holds a value that is neither PEM nor base64 PEM")
    return decoded
