"""One way to build a mutual-TLS client context from PEM bytes (the Talos API client and the first-up wait)."""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Sequence


def client_context(ca_pem: bytes, cert_pem: bytes, key_pem: bytes, *, alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """Verify the server against ``ca_pem`` only (hostname or IP SAN checked), present the client certificate,
    TLS 1.2 at least. ``ssl`` loads a client key from files only: both go to a private temporary folder (0600,
    O_EXCL), are loaded, and are removed at once."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED are its defaults
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=ca_pem.decode())
    with tempfile.TemporaryDirectory(prefix="talos-dr-tls-") as d:
        paths = []
        for name, data in (("crt.pem", cert_pem), ("key.pem", key_pem)):
            path = os.path.join(d, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            paths.append(path)
        ctx.load_cert_chain(paths[0], paths[1])
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx
