"""Snapshot names: a pure round-trip pair. Names sort by time because the timestamp is fixed-width UTC."""

from __future__ import annotations

import re
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
