"""The restore journal on disk (``.talos/restore-journal.json``): read, written atomically and private (0600) through
``dr.adapters.fsutil``, removed. The record itself and its JSON form are ``dr.core.journal``."""

from __future__ import annotations

from pathlib import Path

from dr.adapters.fsutil import atomic_write, read_state_file
from dr.core import journal
from dr.core.journal import Journal


def load(path: Path) -> Journal | None:
    """The journal at ``path``, or None when there is none. A FIFO, device or link there is refused, never waited on
    (``read_state_file``)."""
    raw = read_state_file(path, "the restore journal")
    if raw is None:
        return None
    return journal.parse(raw, path)


def save(path: Path, j: Journal) -> None:
    """Write atomically: a crash leaves either the old journal or the new one, never half of one."""
    j.updated_at = journal.now_stamp()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, journal.dumps(j), mode=0o600)


def mark(path: Path, j: Journal, step: str) -> None:
    j.steps[step] = journal.now_stamp()
    save(path, j)


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
