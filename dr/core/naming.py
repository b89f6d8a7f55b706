"""Snapshot names: a pure round-trip pair. Names sort by time because the timestamp is fixed-width UTC."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

PREFIX = "etcd-snapshot-"
SUFFIX = ".db"
SAFETY_PREFIX = "pre-restore-etcd-snapshot-"
_TS_FORMAT = "%Y%m%dT%H%M%SZ"
_NAME_RE = re.compile(r"^(?P<kind>pre-restore-)?etcd-snapshot-(?P<ts>\d{8}T\d{6}Z)\.db$")


def snapshot_name(ts: datetime, *, safety: bool = False) -> str:
    """``etcd-snapshot-YYYYMMDDTHHMMSSZ.db`` for ``ts`` (converted to UTC; naive means UTC).

    ``safety=True`` names the pre-restore copy a restore takes of the etcd it is about to replace.
    """
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    stamp = ts.astimezone(UTC).strftime(_TS_FORMAT)
    return f"{SAFETY_PREFIX if safety else PREFIX}{stamp}{SUFFIX}"


def parse_snapshot_name(name: str) -> datetime | None:
    """The UTC time a snapshot name encodes, or None when ``name`` is not a snapshot name.

    Accepts a bare name or a path/key (only the last component is read).
    """
    base = name.rsplit("/", 1)[-1]
    m = _NAME_RE.match(base)
    if not m:
        return None
    try:
        return datetime.strptime(m.group("ts"), _TS_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def is_safety_snapshot(name: str) -> bool:
    return name.rsplit("/", 1)[-1].startswith(SAFETY_PREFIX)


# --- every name a snapshot can have in a store -----------------------------------------------------------------
# dr's own: etcd-snapshot-<ts>.db, with .zst (zstd) and then .age (age) appended for what is stored in S3.
# siderolabs/talos-backup's: <cluster>-<RFC3339>.snap[.zst][.age] under <prefix>/ (talos-backup
# pkg/talos/talos.go: fmt.Sprintf("%s-%s.snap", clusterName, timeStamp.Format(time.RFC3339)); compression then
# encryption append ".zst" and ".age", pkg/compression/compression.go and pkg/encryption/encryption.go).
COMPRESSED_SUFFIX = ".zst"
ENCRYPTED_SUFFIX = ".age"
DR = "dr"
TALOS_BACKUP = "talos-backup"
_LAYERS = r"(?P<zst>\.zst)?(?P<age>\.age)?"
_DR_RE = re.compile(r"^(?P<plain>(?P<kind>pre-restore-)?etcd-snapshot-(?P<ts>\d{8}T\d{6}Z)\.db)" + _LAYERS + "$")
# Go's time.RFC3339 is "2006-01-02T15:04:05Z07:00": Z for UTC, else a numeric offset; no fractional seconds.
_TB_RE = re.compile(
    r"^(?P<plain>(?P<cluster>.+?)-(?P<ts>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2}))\.snap)"
    + _LAYERS + "$"
)


@dataclass(frozen=True)
class SnapshotName:
    """What a stored snapshot's name says: when it was taken, whose scheme named it, and its layers."""

    name: str  # the stored name, as listed (last path component)
    plain: str  # the name of the decoded plain snapshot (the local file a download becomes)
    taken_at: datetime  # UTC
    scheme: str  # DR or TALOS_BACKUP
    compressed: bool = False
    encrypted: bool = False
    safety: bool = False
    cluster: str | None = None  # talos-backup names carry it

    @property
    def format(self) -> str:
        return format_name(self.compressed, self.encrypted)


def format_name(compressed: bool, encrypted: bool) -> str:
    """``plain``, ``zstd``, ``age`` or ``zstd+age`` (the ``snapshot-format`` metadata value)."""
    return "+".join([*(["zstd"] if compressed else []), *(["age"] if encrypted else [])]) or "plain"


def stored_name(plain: str, *, compressed: bool, encrypted: bool) -> str:
    """``plain`` with the layers' suffixes: compression first, then encryption (as talos-backup and the CLIs do)."""
    return plain + (COMPRESSED_SUFFIX if compressed else "") + (ENCRYPTED_SUFFIX if encrypted else "")


def parse(name: str) -> SnapshotName | None:
    """Any snapshot name this project reads (dr's or talos-backup's, any layers), or None. A path or key is fine."""
    base = name.rsplit("/", 1)[-1]
    m = _DR_RE.match(base)
    if m:
        try:
            ts = datetime.strptime(m.group("ts"), _TS_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            return None
        return SnapshotName(base, m.group("plain"), ts, DR, bool(m.group("zst")), bool(m.group("age")),
                            bool(m.group("kind")))
    m = _TB_RE.match(base)
    if m:
        try:
            ts = datetime.fromisoformat(m.group("ts").replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            return None
        return SnapshotName(base, m.group("plain"), ts, TALOS_BACKUP, bool(m.group("zst")), bool(m.group("age")),
                            False, m.group("cluster"))
    return None
