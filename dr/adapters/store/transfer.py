"""Moving snapshot bytes through a store's codec layers: ``put``'s trailer check as the plaintext streams
(``verified_chunks``), the stored name for a set of layers, and ``fetch``/``decode_to``, which undo the layers the
content carries into a local ``.part`` that is renamed only when the trailer and what was recorded at upload check.
Backends call these; they never decode on their own."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from dr.adapters import codec, s3
from dr.adapters.fsutil import atomic_writer
from dr.adapters.store.protocol import S3, Entry, SnapshotStore
from dr.core import naming
from dr.core.errors import (
    ConfigError,
    CorruptSnapshot,
    DiskFull,
    IntegrityError,
    S3Error,
    SnapshotTooBig,
    UntrustedSnapshot,
)
from dr.core.integrity import SnapshotDigest, TrailerHasher


def verified_chunks(chunks: Iterable[bytes], hasher: TrailerHasher, expected: str | None,
                     out: list[SnapshotDigest]) -> Iterator[bytes]:
    for c in chunks:
        if c:
            hasher.update(c)
            yield c
    digest = hasher.finish()  # raises the integrity error at the end of the stream, before anything is committed
    if expected and digest.content_sha256 != expected:
        raise IntegrityError(f"{hasher.label} changed while it was stored (SHA-256 {digest.content_sha256[:16]}… "
                             f"instead of {expected[:16]}…)", "take the snapshot again; do not modify snapshot files "
                             "while they are copied")
    out.append(digest)


def stored_name(plain: str, compress: bool, recipients: Sequence[Any]) -> tuple[str, naming.SnapshotName]:
    """The stored name of ``plain`` with these layers, parsed; a plain name that is no snapshot name is refused."""
    name = naming.stored_name(plain, compressed=compress, encrypted=bool(recipients))
    parsed = naming.parse(name)
    if parsed is None:
        raise ConfigError(f"{name} is not a snapshot name", "name snapshots etcd-snapshot-<UTC>.db")
    return name, parsed


def decode_to(chunks: Iterable[bytes], dest: Path, *, identities: Sequence[Any], label: str,
              stored_hash: Any = None, overwrite: bool = False,
              before_commit: Callable[[SnapshotDigest, codec.Layers], None] | None = None,
              max_plain: int | None = None, recorded_plain: int | None = None,
              ) -> tuple[SnapshotDigest, codec.Layers]:
    """Decode ``chunks`` (any layers) into ``dest`` through a 0600 ``.part``, checking the plaintext's trailer; the
    ``.part`` is renamed only when it and ``before_commit`` pass. ``stored_hash`` (a hashlib object) sees the stored
    bytes. Decoding stops the moment the plaintext passes ``recorded_plain`` (the size recorded at upload) or
    ``max_plain`` (the cap on any snapshot), so a small compressed bomb never fills a disk."""
    hasher = TrailerHasher(label)

    def counted(it: Iterable[bytes]) -> Iterator[bytes]:
        for c in it:
            if stored_hash is not None:
                stored_hash.update(c)
            yield c

    try:
        with atomic_writer(dest, mode=0o600, overwrite=overwrite) as f:
            def sink(data: bytes) -> None:
                if recorded_plain is not None and hasher.size + len(data) > recorded_plain:
                    raise CorruptSnapshot(f"{label} decodes to more than the {recorded_plain} bytes recorded at "
                                          "upload; decoding was stopped there and nothing was kept",
                                          "use another snapshot; this object was replaced or damaged")
                if max_plain is not None and hasher.size + len(data) > max_plain:
                    raise SnapshotTooBig(f"{label} decodes to more than {max_plain} bytes, more than any etcd "
                                         "snapshot: a decompression bomb or not a snapshot; decoding was stopped "
                                         "there and nothing was kept",
                                         "use another snapshot; raise DR_MAX_SNAPSHOT_BYTES only if a real etcd "
                                         "database is that big")
                hasher.update(data)
                f.write(data)

            layers = codec.decode(counted(chunks), sink, identities=identities, label=label)
            try:
                digest = hasher.finish()
            except IntegrityError as exc:
                if not (layers.compressed or layers.encrypted):
                    raise
                # The message says which stored layers the damaged plaintext was read through.
                raise type(exc)(f"{exc.message} (read from a {layers.format} copy: the stored copy is damaged or "
                                "was cut short)", exc.hint) from None
            if before_commit is not None:
                before_commit(digest, layers)
    except OSError as exc:
        if exc.errno == 28:
            raise DiskFull(f"writing {dest} failed: no space left on device after {hasher.size} decoded bytes",
                           f"free space under {dest.parent} and retry; if that is far more than your cluster's etcd "
                           "holds, it is not a snapshot (a decompression bomb): use another one") from exc
        raise
    return digest, layers


def provenance_warnings(entry: Entry) -> list[str]:
    """What about an S3 object says talos-dr's writers did not write it (they always ask S3 for a SHA-256 and record
    their ``source``): one line each, for the operator to weigh before a restore. Pure."""
    if entry.store != S3:
        return []
    out = []
    if not entry.s3_checksum:
        out.append(f"S3 recorded no checksum for {entry.location}: talos-dr's writers always ask for one, so something "
                   "else wrote it; make sure you know what (the bucket policy names who may write there)")
    if entry.described and entry.source is None and naming.parse(entry.location.rsplit("/", 1)[-1]) is not None \
            and entry.name.name.startswith(naming.PREFIX):
        out.append(f"{entry.location} does not say which talos-dr writer made it (no source metadata)")
    return out


def _vouched_by_s3(entry: Entry, stored: s3.StoredChecksum | None, warn: Callable[[str], None] | None) -> bool:
    """True when the bytes read are the ones S3 recorded a SHA-256 of at upload; ``UntrustedSnapshot`` when they are
    not; False when there is no checksum to compare, or it cannot be told (a composite of other part sizes)."""
    if stored is None or not entry.s3_checksum:
        return False
    same = stored.check(entry.s3_checksum)
    if same is False:
        raise UntrustedSnapshot(f"{entry.location} is not what was uploaded: its bytes do not match the SHA-256 S3 "
                                f"recorded at upload ({entry.s3_checksum})",
                                "use another snapshot, and find out what replaced this one")
    if same is None and warn is not None:
        warn(f"{entry.location} was uploaded in parts of another size than talos-dr's; its bytes could not be checked "
             f"against the composite SHA-256 S3 recorded ({entry.s3_checksum})")
    return same is True


def fetch(store: SnapshotStore, entry: Entry, dest: Path, *, identities: Sequence[Any] = (),
          progress: s3.ProgressFn | None = None, overwrite: bool = False,
          warn: Callable[[str], None] | None = None, max_plain: int | None = None,
          ) -> tuple[SnapshotDigest, codec.Layers]:
    """``entry``'s plaintext, decoded and verified, at ``dest`` (nothing there, and no ``.part``, on failure).

    Beyond the trailer: every stored byte must arrive (a short read is an S3 error to retry, not damage), the stored
    bytes must be the ones S3 recorded a SHA-256 of at upload (``UntrustedSnapshot`` otherwise), and the SHA-256 and
    size recorded at upload must be the plaintext's. Facts that came from tags (which a tagger can change after
    upload) are believed only against those bytes: when the S3 checksum vouches for the bytes and the trailer passes,
    a tag that disagrees was rewritten, and ``warn`` is told instead of the snapshot being refused."""
    seen = [0]
    stored = s3.StoredChecksum() if entry.s3_checksum else None
    for line in provenance_warnings(entry):
        if warn is not None:
            warn(line)

    def counted(it: Iterable[bytes]) -> Iterator[bytes]:
        for c in it:
            seen[0] += len(c)
            if stored is not None:
                stored.update(c)
            if progress:
                progress(len(c))
            yield c

    def check(digest: SnapshotDigest, layers: codec.Layers) -> None:
        if seen[0] != entry.size:
            raise S3Error(f"reading {entry.location} ended after {seen[0]} of {entry.size} bytes", "retry the download")
        vouched = _vouched_by_s3(entry, stored, warn)
        tag_only = entry.facts_from_tags and vouched
        if entry.sha256 and entry.sha256 != digest.content_sha256 and tag_only:
            if warn is not None:
                warn(f"the snapshot-sha256 tag of {entry.location} was changed after upload ({entry.sha256[:16]}…); "
                     "its bytes are the ones S3 recorded at upload and its trailer checks, so the tag is ignored")
        elif entry.sha256 and entry.sha256 != digest.content_sha256:
            raise CorruptSnapshot(f"{entry.location} is not the snapshot that was stored: its SHA-256 "
                                  f"{digest.content_sha256[:16]}… differs from the {entry.sha256[:16]}… recorded at "
                                  "upload", "use another snapshot; this object was replaced or damaged")
        if entry.plain_size is not None and entry.plain_size != digest.size and not tag_only:
            raise CorruptSnapshot(f"{entry.location} decodes to {digest.size} bytes, not the {entry.plain_size} "
                                  "recorded at upload", "use another snapshot; this object was replaced or damaged")

    return decode_to(counted(store.open(entry)), dest, identities=identities, label=entry.location,
                     overwrite=overwrite, before_commit=check, max_plain=max_plain, recorded_plain=entry.plain_size)
