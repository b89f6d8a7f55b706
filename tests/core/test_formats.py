"""dr.core.formats.sniff: the outer layer, read from the content (magic numbers from the formats' specifications),
checked against what the real age and zstd CLIs write."""

from __future__ import annotations

import subprocess

import pytest

from dr.core import formats
from dr.core.formats import DESCRIBE, SNIFF_BYTES, sniff
from dr.core.integrity import BOLT_MAGIC_OFFSET
from tests.support.snapshots import age_keygen, synthetic_snapshot
from tests.support.tools import require_binary


def _run(argv: list[str], data: bytes) -> bytes:
    return subprocess.run(argv, input=data, check=True, capture_output=True).stdout


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return age_keygen(tmp_path_factory.mktemp("age"))


def test_a_snapshot_is_bbolt():
    assert sniff(synthetic_snapshot()) == formats.BBOLT
    assert sniff(synthetic_snapshot()[:SNIFF_BYTES]) == formats.BBOLT


def test_zstd_cli_output_is_zstd():
    out = _run([require_binary("zstd"), "-c", "-q"], synthetic_snapshot())
    assert sniff(out[:SNIFF_BYTES]) == formats.ZSTD
    assert sniff(out[:4]) == formats.ZSTD  # the magic number alone (RFC 8878 3.1.1) is enough


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
def test_age_cli_output_is_age(key, armor):
    out = _run([require_binary("age"), *(["-a"] if armor else []), "-r", key.recipient], synthetic_snapshot())
    assert sniff(out[:SNIFF_BYTES]) == (formats.AGE_ARMORED if armor else formats.AGE)


def test_zstd_then_age_is_age_outside(key):
    """talos-backup's order: the outer layer is age; what the identity opens is zstd."""
    z = _run([require_binary("zstd"), "-c", "-q"], synthetic_snapshot())
    a = _run([require_binary("age"), "-r", key.recipient], z)
    assert sniff(a) == formats.AGE
    inner = _run([require_binary("age"), "-d", "-i", str(key.identity_file)], a)
    assert sniff(inner) == formats.ZSTD


@pytest.mark.parametrize("data", [
    b"", b"\x28\xb5\x2f", b"age-encryption.org/v", b"age-encryption.org/v2\n", b"-----BEGIN PGP MESSAGE-----",
    b"SQLite format 3\x00" + b"\0" * 16, b"\x1f\x8b\x08\x00" + b"\0" * 20, b"\0" * 64,
    b"\0" * BOLT_MAGIC_OFFSET + b"\xed\xda\x0c",  # a cut bbolt magic
    b"\0" * BOLT_MAGIC_OFFSET + b"\xed\x0c\xda\xed",  # big-endian: not bbolt's on-disk order
])
def test_other_content_is_unknown(data):
    assert sniff(data) == formats.UNKNOWN


def test_sniff_bytes_covers_every_magic():
    assert SNIFF_BYTES >= len(formats.AGE_MAGIC)
    assert SNIFF_BYTES >= len(formats.AGE_ARMOR)
    assert SNIFF_BYTES >= BOLT_MAGIC_OFFSET + 4


def test_magics_are_the_specifications():
    assert formats.AGE_MAGIC == b"age-encryption.org/v1\n"
    assert formats.AGE_ARMOR == b"-----BEGIN AGE ENCRYPTED FILE-----"
    assert int.from_bytes(formats.ZSTD_MAGIC, "little") == 0xFD2FB528


def test_every_kind_is_described_for_users():
    assert set(DESCRIBE) == {formats.AGE, formats.AGE_ARMORED, formats.ZSTD, formats.BBOLT, formats.UNKNOWN}
    assert "encrypted" in DESCRIBE[formats.AGE] and "encrypted" in DESCRIBE[formats.AGE_ARMORED]
    assert "compressed" in DESCRIBE[formats.ZSTD]
