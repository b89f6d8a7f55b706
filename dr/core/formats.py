"""What a snapshot's first bytes say it is: age-encrypted, zstd-compressed, an etcd (bbolt) snapshot, or none of these.

The content decides how a file is decoded; its name only says when it was taken. Magic numbers, from the formats'
own specifications:
- age: the header's first line is ``age-encryption.org/v1`` (C2SP age spec, "Header"); the ASCII-armored form starts
  with ``-----BEGIN AGE ENCRYPTED FILE-----`` (spec, "ASCII armor").
- zstd: every frame starts with the magic number 0xFD2FB528, little-endian ``28 B5 2F FD`` (RFC 8878 section 3.1.1).
- bbolt: page 0's meta carries 0xED0CDAED at byte 16 (see dr.core.integrity).
"""

from __future__ import annotations

import struct

from dr.core.integrity import BOLT_MAGIC, BOLT_MAGIC_OFFSET

AGE_MAGIC = b"age-encryption.org/v1\n"
AGE_ARMOR = b"-----BEGIN AGE ENCRYPTED FILE-----"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SNIFF_BYTES = max(len(AGE_MAGIC), len(AGE_ARMOR), BOLT_MAGIC_OFFSET + 4)

AGE = "age"
AGE_ARMORED = "age-armored"
ZSTD = "zstd"
BBOLT = "bbolt"
UNKNOWN = "unknown"

# How a layer is named to a user whose file cannot be read because of it.
DESCRIBE = {
    AGE: "age-encrypted",
    AGE_ARMORED: "age-encrypted (ASCII-armored)",
    ZSTD: "zstd-compressed",
    BBOLT: "an etcd snapshot",
    UNKNOWN: "not an etcd snapshot",
}


def sniff(head: bytes) -> str:
    """The outer layer of data starting with ``head`` (give at least ``SNIFF_BYTES`` bytes when there are that many)."""
    if head.startswith(AGE_MAGIC):
        return AGE
    if head.startswith(AGE_ARMOR):
        return AGE_ARMORED
    if head.startswith(ZSTD_MAGIC):
        return ZSTD
    if len(head) >= BOLT_MAGIC_OFFSET + 4 and struct.unpack_from("<I", head, BOLT_MAGIC_OFFSET)[0] == BOLT_MAGIC:
        return BBOLT
    return UNKNOWN
