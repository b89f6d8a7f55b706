"""How times and durations are written, once: UTC timestamps in records and messages, and the three duration forms
(they mean different things, so they read differently)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

ISO_UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def iso_utc(ts: datetime) -> str:
    """``2026-12-01T03:00:00Z``: how every command and record writes a UTC time."""
    return ts.astimezone(UTC).strftime(ISO_UTC_FORMAT)


def human_duration(seconds: float) -> str:
    """``42s``, ``3m07s``, ``1h05m``: how long something took or may take (a timeout, an elapsed wait)."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def human_age(seconds: float) -> str:
    """``42s``, ``5m``, ``3h07m``, ``2d04h``: how long ago (a snapshot's age; coarse, never negative)."""
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def human_interval(d: timedelta) -> str:
    """``2 hours``, ``1 day``, ``90 seconds``: a configured period, exactly, in words."""
    s = int(d.total_seconds())
    for unit, n in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s % n == 0:
            k = s // n
            return f"{k} {unit}{'s' if k != 1 else ''}"
    return f"{s} seconds"
