"""Backup freshness: how often a schedule fires and when its newest snapshot counts as stale. Pure: the clock is an
argument. Used by the deploy-time check (``infra/providers/backup_check.py``)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import overload

from dr.core.timefmt import human_interval, iso_utc

FRESH = "fresh"
STALE_FACTOR = 2
_RATE_RE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}


def schedule_interval(expression: str) -> timedelta:
    """The interval an EventBridge Scheduler expression fires at: exact for ``rate(...)``; for ``cron(...)`` the
    gap implied by its hour field (``*`` → 1 h, ``*/N`` → N h, anything else → 24 h), a safe upper bound for
    staleness. ``at(...)`` (one-off) is refused."""
    expr = expression.strip()
    m = _RATE_RE.match(expr)
    if m:
        n, unit = int(m.group(1)), m.group(2).rstrip("s")
        if n <= 0:
            raise ValueError(f"schedule {expression!r}: the rate must be positive")
        return timedelta(seconds=n * _UNITS[unit])
    if expr.startswith("cron(") and expr.endswith(")"):
        fields = expr[5:-1].split()
        if len(fields) != 6:
            raise ValueError(f"schedule {expression!r}: cron() takes 6 fields (minutes hours day-of-month month day-of-week year)")
        hours = fields[1]
        if hours == "*":
            return timedelta(hours=1)
        if hours.startswith("*/") and hours[2:].isdigit() and int(hours[2:]) > 0:
            return timedelta(hours=int(hours[2:]))
        return timedelta(days=1)
    raise ValueError(f"schedule {expression!r} is not rate(N unit) or cron(...)")


@overload
def stale_since(newest: datetime, interval: timedelta) -> datetime: ...
@overload
def stale_since(newest: None, interval: timedelta) -> None: ...
def stale_since(newest: datetime | None, interval: timedelta) -> datetime | None:
    """When backups count as stale: ``STALE_FACTOR`` intervals after the newest snapshot (None: no snapshot)."""
    return None if newest is None else newest + STALE_FACTOR * interval


def freshness(newest: datetime | None, interval: timedelta, now: datetime, where: str = "") -> str:
    """``"fresh"`` or a ``"stale ..."`` sentence for the preview. Pure: the clock is an argument."""
    if newest is None:
        return f"stale: no snapshot in {where}" if where else "stale: no snapshot yet"
    since = stale_since(newest, interval)
    if now < since:
        return FRESH
    return f"stale since {iso_utc(since)} (newest snapshot taken {iso_utc(newest)}; schedule every {human_interval(interval)})"

