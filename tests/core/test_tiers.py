"""dr.core.tiers: the tier of a new snapshot, as a table of what is already in the bucket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from dr.core import tiers
from dr.core.tiers import DAILY, HOURLY, MONTHLY, WEEKLY, tier_for, validate_days


def t(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


# 2026-11-23 is a Monday (ISO week 48); 2026-11-30 is a Monday too (week 49) and 2026-12-01 a Tuesday.
@pytest.mark.parametrize("taken, earlier, tier", [
    ("2026-11-24 02:00", [], MONTHLY),  # an empty bucket: the first snapshot is this month's first
    ("2026-11-24 02:00", ["2026-10-31 23:00"], MONTHLY),  # last month's do not count
    ("2026-11-24 02:00", ["2026-11-01 00:00"], WEEKLY),  # the month has one, this ISO week none
    ("2026-11-24 02:00", ["2026-11-22 23:59"], WEEKLY),  # Sunday 22nd is last ISO week
    ("2026-11-24 02:00", ["2026-11-23 00:00"], DAILY),  # Monday 23rd is this week, not today
    ("2026-11-24 02:00", ["2026-11-23 00:00", "2026-11-24 00:00"], HOURLY),
    ("2026-11-24 02:00", ["2026-11-24 01:00"], HOURLY),  # today's first already there: it is also the week's
    ("2026-11-24 00:00", ["2026-11-23 23:00"], DAILY),  # midnight UTC starts a day
    # An ISO week across a month boundary: Tuesday 1 Dec is the month's first, whatever the week holds.
    ("2026-12-01 00:00", ["2026-11-30 12:00"], MONTHLY),
    ("2026-12-01 05:00", ["2026-11-30 12:00", "2026-12-01 00:00"], HOURLY),
    # ISO week 53 of 2026 runs into 2027: 1 Jan 2027 (a Friday) is the month's first, 2 Jan then a daily.
    ("2027-01-01 00:00", ["2026-12-28 00:00"], MONTHLY),
    ("2027-01-02 00:00", ["2026-12-28 00:00", "2027-01-01 00:00"], DAILY),
    ("2027-01-04 00:00", ["2027-01-01 00:00", "2027-01-02 00:00"], WEEKLY),  # Monday: week 1 of 2027
    # Only what came before counts: a later one (or the same instant) does not make this one second.
    ("2026-11-24 02:00", ["2026-11-24 03:00", "2026-11-30 00:00"], MONTHLY),
    ("2026-11-24 02:00", ["2026-11-24 02:00"], MONTHLY),
])
def test_tier_table(taken, earlier, tier):
    assert tier_for(t(taken), [t(e) for e in earlier]) == tier


def test_listing_order_does_not_matter():
    earlier = [t("2026-11-24 01:00"), t("2026-11-01 00:00"), t("2026-11-23 00:00")]
    assert tier_for(t("2026-11-24 02:00"), earlier) == tier_for(t("2026-11-24 02:00"), reversed(earlier)) == HOURLY


def test_times_are_compared_in_utc():
    plus_two = timezone(timedelta(hours=2))
    # 01:00 at +02:00 is 23:00 UTC the day before: a new UTC day, not the same local day.
    taken = datetime(2026, 11, 25, 1, 0, tzinfo=plus_two)
    assert tier_for(taken, [t("2026-11-24 00:00"), t("2026-11-01 00:00"), t("2026-11-23 00:00")]) == HOURLY
    assert tier_for(datetime(2026, 11, 24, 2, 0), [t("2026-11-24 01:00"), t("2026-11-23 00:00")]) == HOURLY  # naive = UTC


def test_a_month_of_hourly_snapshots_thins_out():
    start = t("2026-11-01 00:00")
    taken: list[datetime] = []
    counts = {tier: 0 for tier in tiers.TIERS}
    for h in range(30 * 24):
        ts = start + timedelta(hours=h)
        counts[tier_for(ts, taken)] += 1
        taken.append(ts)
    # November 2026: one monthly (the 1st, a Sunday), weeklies on the Mondays 2, 9, 16, 23 and 30,
    # dailies on the other 24 days, the rest hourly.
    assert counts == {MONTHLY: 1, WEEKLY: 5, DAILY: 24, HOURLY: 720 - 30}


@pytest.mark.parametrize("days, problems", [
    (dict(tiers.DEFAULT_DAYS), []),
    ({"hourly": 1, "daily": 2, "weekly": 3, "monthly": 4}, []),
    ({"hourly": 2, "daily": 2, "weekly": 56, "monthly": 365}, ["daily (2 days) must be kept longer than hourly (2 days)"]),
    ({"hourly": 2, "daily": 14, "weekly": 400, "monthly": 365},
     ["monthly (365 days) must be kept longer than weekly (400 days)"]),
    ({"hourly": 0, "daily": 14, "weekly": 56, "monthly": 365}, ["hourly: 0 is not a whole number of days of at least 1"]),
    ({"hourly": True, "daily": 14, "weekly": 56, "monthly": 365},
     ["hourly: True is not a whole number of days of at least 1"]),
    ({"daily": 14, "weekly": 56, "monthly": 365}, ["hourly: None is not a whole number of days of at least 1"]),
    ({**tiers.DEFAULT_DAYS, "yearly": 3650}, ["unknown tier(s) ['yearly']; the tiers are hourly, daily, weekly, monthly"]),
])
def test_validate_days(days, problems):
    assert validate_days(days) == problems


def test_latest_is_no_expiring_tier():
    assert tiers.LATEST not in tiers.TIERS and tiers.TAG_KEY == "retention"
