"""Retention tiers: which tier a new snapshot belongs to, as a pure function of the times already in the bucket.

Every snapshot object is tagged ``retention=<tier>`` when it is written, and the bucket's lifecycle rules
(``infra/bucket.py``) expire each tier after its own number of days. A tier is decided once, at upload, from the
snapshots already there, so the decision never changes afterwards and nothing has to re-tag or delete:

* ``monthly``: the first snapshot of its UTC calendar month in the bucket;
* ``weekly``: else the first of its ISO week (Monday to Sunday, UTC);
* ``daily``: else the first of its UTC day;
* ``hourly``: everything else.

A calendar-bucket scheme like restic's ``forget --keep-monthly/--keep-weekly/--keep-daily/--keep-hourly``, except
that restic keeps the *newest* snapshot of each period and decides at prune time; a lifecycle rule cannot look at
other objects, so here it is the *first* of each period, decided when it is written.

``latest`` is the tier of the pinned copy at ``<prefix>latest``, which no rule expires.

The clock is never read here: ``taken_at`` and ``earlier`` are arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

TAG_KEY = "retention"

MONTHLY = "monthly"
WEEKLY = "weekly"
DAILY = "daily"
HOURLY = "hourly"
LATEST = "latest"

# Shortest-lived first: the order their expiry days must increase in.
TIERS: tuple[str, ...] = (HOURLY, DAILY, WEEKLY, MONTHLY)
# Defaults (days): two days of hourlies, two weeks of dailies, eight weeks of weeklies, a year of monthlies.
DEFAULT_DAYS: Mapping[str, int] = {HOURLY: 2, DAILY: 14, WEEKLY: 56, MONTHLY: 365}


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _month(ts: datetime) -> tuple[int, int]:
    return ts.year, ts.month


def _week(ts: datetime) -> tuple[int, int]:
    iso = ts.isocalendar()
    return iso.year, iso.week


def _day(ts: datetime) -> tuple[int, int, int]:
    return ts.year, ts.month, ts.day


def tier_for(taken_at: datetime, earlier: Iterable[datetime]) -> str:
    """The tier of a snapshot taken at ``taken_at``, given the taken-at times of the snapshots already in the bucket.

    Naive datetimes are UTC. Times in ``earlier`` that are not before ``taken_at`` are ignored (a snapshot cannot be
    the second of a period because of one taken after it; a repeated time is not "earlier" either), so the answer
    depends only on what came first, whatever order the listing returns.
    """
    now = _utc(taken_at)
    before = [t for t in map(_utc, earlier) if t < now]
    if not any(_month(t) == _month(now) for t in before):
        return MONTHLY
    if not any(_week(t) == _week(now) for t in before):
        return WEEKLY
    if not any(_day(t) == _day(now) for t in before):
        return DAILY
    return HOURLY


def validate_days(days: Mapping[str, int]) -> list[str]:
    """Problems with per-tier expiry days (``{"hourly": 2, "daily": 14, ...}``), as messages; empty when fine.

    Every tier needs a whole number of days of at least 1 (S3 lifecycle ``Days`` must be a positive integer), and
    each tier must live strictly longer than the one before it: a daily that expired before the hourlies around it
    would leave a day with more snapshots than the days before it, the opposite of thinning out with age."""
    problems: list[str] = []
    for tier in TIERS:
        value = days.get(tier)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{tier}: {value!r} is not a whole number of days of at least 1")
    unknown = sorted(set(days) - set(TIERS))
    if unknown:
        problems.append(f"unknown tier(s) {unknown}; the tiers are {', '.join(TIERS)}")
    if problems:
        return problems
    for shorter, longer in zip(TIERS, TIERS[1:], strict=False):
        if days[longer] <= days[shorter]:
            problems.append(f"{longer} ({days[longer]} days) must be kept longer than {shorter} ({days[shorter]} days)")
    return problems


__all__ = [
    "DAILY",
    "DEFAULT_DAYS",
    "HOURLY",
    "LATEST",
    "MONTHLY",
    "TAG_KEY",
    "TIERS",
    "WEEKLY",
    "tier_for",
    "validate_days",
]
