"""Test data for the format and store tests: synthetic etcd snapshots and age keys made by the real age-keygen."""

from __future__ import annotations

import hashlib
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dr.core.integrity import BOLT_MAGIC, BOLT_MAGIC_OFFSET, PAGE_ALIGN
from tests.support.tools import require_binary

PAGE = 4096


def synthetic_snapshot(pages: int = 4, *, fill: bytes | None = None, seed: int = 0) -> bytes:
    """A snapshot dr accepts: a bbolt-looking first page (magic 0xED0CDAED at byte 16), ``pages`` pages of content
    and the SHA-256 trailer, so ``size % 512 == 32``. ``fill`` repeats one byte pattern (compressible); by default
    the content is pseudo-random (incompressible) and differs with ``seed``."""
    head = bytearray(PAGE)
    head[BOLT_MAGIC_OFFSET:BOLT_MAGIC_OFFSET + 4] = BOLT_MAGIC.to_bytes(4, "little")
    n = pages * PAGE
    if fill is not None:
        body = (fill * (n // len(fill) + 1))[:n]
    else:
        body = random.Random(seed).randbytes(n)
    content = bytes(head) + body
    assert len(content) % PAGE_ALIGN == 0
    return content + hashlib.sha256(content).digest()


def chunked(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


@dataclass(frozen=True)
class AgeKey:
    identity_file: Path  # what `age-keygen -o` wrote
    recipient: str  # what `age-keygen -y` prints for it

    @property
    def identity_text(self) -> str:
        return self.identity_file.read_text()


def age_keygen(folder: Path, name: str = "key.txt") -> AgeKey:
    """A new X25519 key made by Debian's age-keygen (not by the code under test)."""
    keygen = require_binary("age-keygen")
    path = folder / name
    subprocess.run([keygen, "-o", str(path)], check=True, capture_output=True)
    pub = subprocess.run([keygen, "-y", str(path)], check=True, capture_output=True, text=True).stdout.strip()
    return AgeKey(path, pub)
