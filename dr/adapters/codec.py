"""Streaming encode (zstd, then age) and decode (age, then zstd) of snapshots, with libraries made for it.

- zstd: ``backports.zstd`` (the standard library's ``compression.zstd`` of Python 3.14, PEP 784, for older Pythons;
  bindings to the reference C library). Frames carry a content checksum. Chosen over python-zstandard because its
  decompressor bounds each output (``max_length``) and reports a frame cut short (``eof``), which python-zstandard's
  stream_writer does not (indygreg/python-zstandard#196).
- age: ``pyrage`` (bindings to the ``rage`` implementation of the age spec). ``pyrage.encrypt_io`` pulls plaintext
  from a reader and pushes ciphertext to a writer; ``decrypt_io`` does the reverse. Both stream in 64 KiB pieces.

Nothing here frames, pads or encrypts by hand. Memory stays bounded whatever the ratio: compressed input is
decompressed through ``stream_writer`` in ``CHUNK``-sized outputs (a 1 MiB piece of a mostly-empty bbolt file can
expand to far more than 1 MiB).

The layer order matches siderolabs/talos-backup (compress, then encrypt) and the CLIs: what ``encode`` writes,
``age -d | zstd -d`` reads; what ``zstd | age -r`` writes, ``decode`` reads.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyrage
from backports import zstd

from dr.core.errors import CorruptSnapshot, DRError, NotASnapshot, SnapshotEncrypted
from dr.core.formats import AGE, AGE_ARMORED, DESCRIBE, SNIFF_BYTES, ZSTD, ZSTD_MAGIC, sniff
from dr.core.integrity import CHUNK

ZSTD_LEVEL = 3  # zstd's own default: most of the ratio on bbolt's free pages at a fraction of the time of higher levels

Write = Callable[[bytes], Any]


@dataclass(frozen=True)
class Layers:
    """What decode found around the plaintext, outermost first."""

    encrypted: bool = False
    compressed: bool = False

    @property
    def format(self) -> str:
        from dr.core.naming import format_name

        return format_name(self.compressed, self.encrypted)


class _PullReader(io.RawIOBase):
    """A readable stream over an iterator of chunks; the iterator's own exception is kept for the caller (pyrage
    turns it into a generic error on its way through Rust)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._it: Iterator[bytes] = iter(chunks)
        self._buf = b""
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
            except BaseException as exc:
                self.error = exc
                raise
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class _PushWriter(io.RawIOBase):
    """A writable stream that hands every piece to ``write``; its exception is kept for the caller, as above."""

    def __init__(self, write: Write):
        self._write = write
        self.error: BaseException | None = None

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        try:
            self._write(data)
        except BaseException as exc:
            self.error = exc
            raise
        return len(data)


def _compress(chunks: Iterable[bytes], level: int) -> Iterator[bytes]:
    cobj = zstd.ZstdCompressor(options={zstd.CompressionParameter.compression_level: level,
                                        zstd.CompressionParameter.checksum_flag: 1})
    for c in chunks:
        out = cobj.compress(c)
        if out:
            yield out
    yield cobj.flush(zstd.ZstdCompressor.FLUSH_FRAME)


def encode(chunks: Iterable[bytes], write: Write, *, compress: bool, recipients: Sequence[Any] = (),
           level: int = ZSTD_LEVEL) -> None:
    """Compress (when ``compress``) and encrypt (when ``recipients``) ``chunks`` into ``write``, in one pass.

    An exception from ``chunks`` (a failed trailer check at the end of the stream, a node that stopped sending) or
    from ``write`` comes out as itself, after which the caller discards what was written."""
    source: Iterable[bytes] = _compress(chunks, level) if compress else chunks
    if not recipients:
        for piece in source:
            write(piece)
        return
    reader, writer = _PullReader(source), _PushWriter(write)
    try:
        pyrage.encrypt_io(reader, writer, list(recipients))  # type: ignore[arg-type]  # any object with read/write
    except BaseException:
        for err in (reader.error, writer.error):
            if err is not None:
                raise err from None
        raise


class _Decompress:
    """Push-style zstd decoding with outputs of at most ``CHUNK`` bytes, across concatenated frames (as ``zstd -d``
    reads them). A damaged frame, or input that ends inside one, becomes a CorruptSnapshot that says so."""

    def __init__(self, write: Write, label: str):
        self.label = label
        self._write = write
        self._dec = zstd.ZstdDecompressor()
        self._mid_frame = False

    def _fail(self, why: str) -> CorruptSnapshot:
        return CorruptSnapshot(f"{self.label} is corrupt: it is zstd-compressed but does not decompress ({why})",
                               "the compressed copy is damaged or was cut short: use another snapshot")

    def __call__(self, data: bytes) -> None:
        while data or (self._mid_frame and not self._dec.needs_input):
            try:
                out = self._dec.decompress(data, max_length=CHUNK)
            except zstd.ZstdError as exc:
                raise self._fail(str(exc)) from None
            data = b""
            self._mid_frame = not self._dec.eof
            if out:
                self._write(out)
            if self._dec.eof:
                rest = self._dec.unused_data
                self._dec = zstd.ZstdDecompressor()
                self._mid_frame = False
                if rest and not rest.startswith(ZSTD_MAGIC):
                    raise self._fail("bytes after the last frame are not a zstd frame")
                data = rest

    def close(self) -> None:
        if self._mid_frame:
            raise self._fail("the input ends inside a frame")


class _Sniffer:
    """Holds the first bytes back until the layer they start is known, then routes everything to ``route(kind)``."""

    def __init__(self, route: Callable[[str], Write]):
        self._route = route
        self._head = b""
        self._target: Write | None = None
        self.kind: str | None = None

    def __call__(self, data: bytes) -> None:
        if self._target is not None:
            self._target(data)
            return
        self._head += data
        if len(self._head) >= SNIFF_BYTES:
            self._decide()

    def _decide(self) -> None:
        self.kind = sniff(self._head)
        self._target = self._route(self.kind)
        head, self._head = self._head, b""
        if head:
            self._target(head)

    def pending(self) -> bytes:
        return self._head

    def close(self) -> None:
        if self._target is None:
            self._decide()


def decode(chunks: Iterable[bytes], write: Write, *, identities: Sequence[Any] = (), label: str = "snapshot",
           identity_hint: str = "pass --identity FILE (or set DR_AGE_IDENTITY_FILE)") -> Layers:
    """Undo whatever layers ``chunks`` carries (age, then zstd; either, both or none), writing the plaintext to
    ``write``. The layers are read from the content, not the name.

    Raises ``SnapshotEncrypted`` (never a corruption error) for age data without an identity that opens it,
    ``CorruptSnapshot`` for a damaged age or zstd layer, and ``NotASnapshot`` for zstd data inside zstd data or age
    inside age (nothing this project or talos-backup writes)."""
    found = {"encrypted": False, "compressed": False}
    closers: list[Callable[[], None]] = []

    def inner(kind: str) -> Write:  # what may sit inside the age layer, or be the outermost layer itself
        if kind == ZSTD:
            found["compressed"] = True
            dec = _Decompress(write, label)
            closers.append(dec.close)
            return dec
        if kind in (AGE, AGE_ARMORED) and found["encrypted"]:
            raise NotASnapshot(f"{label} is encrypted twice (age inside age)", "decrypt it with `age -d` and retry")
        return write

    def outer(kind: str) -> Write:
        if kind not in (AGE, AGE_ARMORED):
            return inner(kind)
        raise _AgeAhead(kind)

    sniffer = _Sniffer(outer)
    it = iter(chunks)
    try:
        for c in it:
            sniffer(c)
        sniffer.close()
    except _AgeAhead:
        found["encrypted"] = True
        if not identities:
            raise SnapshotEncrypted(f"{label} is {DESCRIBE[AGE]}: it cannot be read without its age identity",
                                    identity_hint) from None
        inner_sniffer = _Sniffer(inner)
        _decrypt(_prepend(sniffer.pending(), it), inner_sniffer, identities, label)
        inner_sniffer.close()
    for close in closers:
        close()
    return Layers(encrypted=found["encrypted"], compressed=found["compressed"])


# Caps on the age header, checked before pyrage sees a byte (a crafted header of 200,000 unknown stanzas kept rage busy
# for more than 10 minutes; 10,000 recipient stanzas for 47 s). age's own parser (FiloSottile/age v1.3.1
# internal/format/format.go: Parse, StanzaReader.ReadStanza) reads the intro line "age-encryption.org/v1", then stanzas
# ("-> type args...", body lines of base64 at most ColumnsPerLine = 64 columns, ended by a shorter line) until the
# "--- <mac>" footer; it limits each body line (BytesPerLine) but neither the number of stanzas nor the header's size.
# Those two caps are ours: a snapshot of this project is encrypted to the stack's few ageRecipients (one X25519 stanza
# each, about 100 bytes), so 64 stanzas in 64 KiB is far more than any file we or talos-backup write.
AGE_MAX_STANZAS = 64
AGE_MAX_HEADER = 64 * 1024
AGE_INTRO = b"age-encryption.org/v1"
AGE_COLUMNS = 64


def _age_header_checked(chunks: Iterator[bytes], label: str) -> Iterator[bytes]:
    """``chunks`` unchanged, after their age header was read (at most AGE_MAX_HEADER bytes) and found within the caps;
    else CorruptSnapshot before any decryption. Armored (PEM) files are passed through: their header is base64."""
    buf = b""
    for c in chunks:
        buf += c
        if b"\n---" in buf[:AGE_MAX_HEADER] or len(buf) > AGE_MAX_HEADER:
            break
    if buf.startswith(b"-----BEGIN"):
        yield buf
        yield from chunks
        return

    def refuse(why: str) -> CorruptSnapshot:
        return CorruptSnapshot(f"{label} is not a snapshot this tool can open: its age header {why}; refused before "
                               "decryption", "use another snapshot; no file this project writes looks like that")

    end = buf.find(b"\n---", 0, AGE_MAX_HEADER)
    if end < 0:
        raise refuse(f"has no end within its first {AGE_MAX_HEADER} bytes (an age header of our snapshots is a few "
                     "hundred bytes)")
    lines = buf[:end].split(b"\n")
    if lines[0] != AGE_INTRO:
        raise refuse("does not start with age-encryption.org/v1")
    stanzas = sum(1 for ln in lines[1:] if ln.startswith(b"-> "))
    if stanzas > AGE_MAX_STANZAS:
        raise refuse(f"has {stanzas} recipient stanzas (at most {AGE_MAX_STANZAS} are read)")
    if any(len(ln) > AGE_COLUMNS for ln in lines[1:] if not ln.startswith(b"-> ")):
        raise refuse(f"has a body line longer than age's {AGE_COLUMNS} columns")
    yield buf
    yield from chunks


def _decrypt(chunks: Iterator[bytes], write: Write, identities: Sequence[Any], label: str) -> None:
    chunks = _age_header_checked(chunks, label)
    reader, writer = _PullReader(chunks), _PushWriter(write)
    try:
        pyrage.decrypt_io(reader, writer, list(identities))  # type: ignore[arg-type]
    except BaseException as exc:
        for err in (reader.error, writer.error):
            if err is not None:
                raise err from None
        if isinstance(exc, DRError):
            raise
        if isinstance(exc, pyrage.DecryptError) and "no matching keys" in str(exc).lower():
            raise SnapshotEncrypted(f"{label} is {DESCRIBE[AGE]} to other recipients: none of the identities given "
                                    "can open it", "pass the identity file whose public key is one of the stack's "
                                    "ageRecipients") from None
        if isinstance(exc, (pyrage.DecryptError, OSError, ValueError)):
            raise CorruptSnapshot(f"{label} is corrupt: it is {DESCRIBE[AGE]} but its ciphertext is damaged or "
                                  f"truncated ({exc})",
                                  "use another snapshot; download this one again if it came from S3") from None
        raise


class _AgeAhead(Exception):
    """Raised by the outer sniffer on age data: decryption needs a pull-style reader over what is left."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


def _prepend(head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if head:
        yield head
    yield from rest


def describe_head(head: bytes) -> str | None:
    """``"zstd-compressed"`` / ``"age-encrypted"`` when that is why ``head`` is not an etcd snapshot, else None."""
    kind = sniff(head)
    return DESCRIBE[kind] if kind in (AGE, AGE_ARMORED, ZSTD) else None
