"""Grow the sandbox's etcd to a given amount of data, through etcd's gRPC gateway, 1 MB values at a time.

etcd refuses requests over 1.5 MiB (``--max-request-bytes``), so no single put may be bigger; random bytes keep the
data as incompressible as real (encrypted) Secrets. Keys are new on every call (no overwritten revisions), so the
snapshot grows by about what was put.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.request
from concurrent.futures import ThreadPoolExecutor

VALUE_BYTES = 1_000_000
PREFIX = "/registry/configmaps/bench/"


def _put(endpoint: str, key: str, value: bytes) -> None:
    body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                       "value": base64.b64encode(value).decode()}).encode()
    req = urllib.request.Request(f"{endpoint}/v3/kv/put", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()


def fill(endpoint: str, add_bytes: int, start_index: int = 0, threads: int = 2) -> int:
    """Put ``add_bytes`` more bytes of values; returns the next free index."""
    n = max(0, -(-add_bytes // VALUE_BYTES))

    def one(i: int) -> None:
        _put(endpoint, f"{PREFIX}cm-{i:06d}", os.urandom(VALUE_BYTES))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(start_index, start_index + n)))
    return start_index + n
