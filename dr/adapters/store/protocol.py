"""What every snapshot store is: the ``SnapshotStore`` protocol with each method's contract, the ``Entry`` a listing
returns, a recorded ``Verification``, and the name lookups every backend shares. A new backend implements the protocol
and passes tests/adapters/test_store_contract.py; callers never branch on where a snapshot lives."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from dr.adapters import s3
from dr.adapters.talosapi.h2stream import printable
from dr.core import naming, spelling
from dr.core.errors import ConfigError, SnapshotNotFound

CATALOG_NAME = ".verified.json"
LOCAL = "local"
S3 = "s3"


@dataclass(frozen=True)
class Verification:
    """A recorded pass of dr.verify. ``sha256`` is the SHA-256 of the bytes that passed (the whole local file, or
    the plaintext's content SHA-256 for an S3 object, whose bytes S3 versions itself)."""

    verified_at: str
    revision: int | None = None
    keys: int | None = None
    sha256: str | None = None
    resources: dict[str, int] | None = None  # per resource type (kept locally; S3 tags have no room for it)


@dataclass(frozen=True)
class Entry:
    store: str  # LOCAL or S3
    name: naming.SnapshotName
    location: str  # a path, or s3://bucket/key
    size: int  # stored bytes
    modified: datetime  # mtime, or S3's LastModified
    sha256: str | None = None  # the plaintext's content SHA-256 (its trailer), when recorded
    plain_size: int | None = None
    revision: int | None = None
    cluster: str | None = None
    recorded_taken_at: str | None = None  # metadata taken-at, when recorded
    source: str | None = None  # dr.backup | schedule, when recorded
    verification: Verification | None = None
    key: str | None = None  # S3 key
    path: Path | None = None  # local path
    tier: str | None = None  # S3: the retention tag (dr.core.tiers)
    warning: str | None = None  # from put: what did not happen beside the store (the `latest` copy), for the caller
    described: bool = False  # metadata and tags read (S3), or catalog consulted (local)
    # S3: the SHA-256 S3 recorded for the stored bytes at upload (base64, "-N" for a multipart's composite), which
    # nobody can change afterwards; and whether ``sha256``/``plain_size`` came from tags (changeable after upload by
    # a principal allowed to tag) rather than metadata (fixed at upload).
    s3_checksum: str | None = None
    facts_from_tags: bool = False
    # S3: what was listed or described, so the download reads that and nothing put there since (an object replaced
    # between the listing and the GET is refused, not read as a short download).
    etag: str | None = None
    version_id: str | None = None

    @property
    def format(self) -> str:
        return self.name.format


class SnapshotStore(Protocol):
    """One place snapshots live. The contract (each method below) is what tests/adapters/test_store_contract.py checks
    on every backend; errors are always ``dr.core.errors`` types, never a library's own exception."""

    kind: str  # LOCAL or S3: what ``Entry.store`` says for its entries

    @property
    def where(self) -> str:
        """Where the store is, as the user would name it (a folder path, ``s3://bucket/prefix``). Never fails, never
        touches the network or the disk."""
        ...

    def list(self) -> list[Entry]:
        """Every snapshot in the store, newest first by name: entries whose names parse as snapshot names
        (``dr.core.naming``), nothing else (no folders, symlinks, ``latest`` alias or catalog). Cheap: size and
        modification time only, ``described`` False. An empty or missing store is an empty list, not an error.
        Raises ``S3Error``/``AccessDenied`` when the store cannot be read. Never writes."""
        ...

    def stat(self, name: str) -> Entry:
        """The one entry named ``name`` (its stored name, or the plain name it decodes to: ``find``), described.
        Raises ``SnapshotNotFound`` (with the closest names) when there is none, ``ConfigError`` when ``name`` matches
        more than one stored snapshot. Never writes."""
        ...

    def describe(self, entry: Entry) -> Entry:
        """``entry`` with what the store recorded about it (SHA-256, plaintext size, a standing verification, S3's
        checksum), ``described`` True. A verification of other bytes than the entry holds now is dropped, never
        returned. Raises ``SnapshotNotFound`` when the entry is gone. Never writes."""
        ...

    def open(self, entry: Entry) -> Iterator[bytes]:
        """The entry's stored bytes, as they are (no decoding: ``fetch`` does that), in chunks. Raises
        ``SnapshotNotFound`` when it is gone, ``S3Error`` on a transport failure (a short read is the caller's to
        notice: ``fetch`` counts). Never writes."""
        ...

    def put(self, chunks: Iterable[bytes], plain: str, *, compress: bool = False, recipients: Sequence[Any] = (),
            metadata: dict[str, str] | None = None, expected_sha256: str | None = None,
            progress: s3.ProgressFn | None = None, label: str | None = None) -> Entry:
        """Store the plaintext ``chunks`` under ``plain``'s stored name (zstd when ``compress``, age-encrypted to
        ``recipients``) and return its described entry. The etcd hash trailer is checked as the bytes stream; nothing
        becomes visible unless it matches (and equals ``expected_sha256`` when given): ``IntegrityError`` and no
        object, no file, no ``.part`` left. Never overwrites: an existing name is refused (``FileExistsError`` from
        the local folder, ``S3Error`` from S3's ``If-None-Match``). Raises ``ConfigError`` for a name that is no
        snapshot name, ``DiskFull``/``AccessDenied``/``S3Error`` when the store refuses the bytes. What did not happen
        beside the store (S3's ``latest`` copy) is ``Entry.warning``, not an exception."""
        ...

    def record_verification(self, entry: Entry, v: Verification) -> None:
        """Record that ``entry``'s bytes passed ``talos-dr verify`` (``v``), tied to those bytes' SHA-256 so that a
        later change of the bytes voids it. Touches only the record (the catalog file, the object's tags), never the
        snapshot's bytes. Raises ``S3Error``/``AccessDenied`` when it cannot be written."""
        ...


def newest_first(entries: Iterable[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (e.name.taken_at, e.modified, e.name.name), reverse=True)


def find(entries: Iterable[Entry], name: str) -> Entry | None:
    """The entry whose stored or plain name is ``name`` (the stored name wins; among plain-name matches the newest)."""
    base = name.rsplit("/", 1)[-1]
    candidates = list(entries)
    plain = [e for e in candidates if e.name.plain == base]
    exact = [e for e in candidates if e.name.name == base]
    if exact and any(e.name.name != base for e in plain):
        # `X.db` stored as it is and `X.db.zst` beside it: `list` shows one row for the name, and which object the
        # name meant was a guess. Refused: the caller names one by its stored name or URI.
        others = ", ".join(printable(e.location) for e in [*exact, *plain] if e.name.name != base or e is exact[0])
        raise ConfigError(f"{printable(base)} names more than one stored snapshot ({others})",
                          "name the one you mean by its full stored name or s3:// URI (`talos-dr list --json` "
                          "shows both)")
    if exact:
        return exact[0]
    return newest_first(plain)[0] if plain else None


def not_found(name: str, where: str, entries: Iterable[Entry]) -> SnapshotNotFound:
    """"No snapshot named X", with the closest names there (a digit wrong in a 33-character name at 3 a.m.)."""
    base = name.rsplit("/", 1)[-1]  # `where` already ends with the prefix: say it once
    close = difflib.get_close_matches(base, sorted({e.name.name for e in entries}), n=3, cutoff=0.8)
    maybe = f"did you mean {' or '.join(close)}? " if close else ""
    return SnapshotNotFound(f"no snapshot named {base} in {where}",
                            f"{maybe}list snapshots with `{spelling.command('list')}`")
