"""`talos-dr prune --s3` with a wrong clock (hostile-inputs 39-40): nothing of ours goes, whatever `now` says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dr.adapters.store import Entry
from dr.commands.prune import decide_s3
from dr.core import naming, tiers

REAL_NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _entry(days_ago: float, tier: str = tiers.HOURLY) -> Entry:
    when = REAL_NOW - timedelta(days=days_ago)
    name = naming.snapshot_name(when) + ".zst"
    parsed = naming.parse(name)
    assert parsed is not None
    return Entry("s3", parsed, f"s3://b/snapshots/{name}", 100, when + timedelta(seconds=30), key=f"snapshots/{name}",
                 source="dr.backup", tier=tier)


@pytest.mark.parametrize("skew_days", [30, -30])
def test_a_clock_thirty_days_off_deletes_nothing_recent(skew_days):
    entries = [_entry(d) for d in (0.1, 0.5, 1, 1.5, 3)]  # hourly tier: 2 days
    decisions = decide_s3(entries, 7, REAL_NOW + timedelta(days=skew_days))
    assert not any(d.delete for d in decisions), decisions
    # With the right clock the 3-day-old hourly one goes (the newest three always stay).
    right = decide_s3(entries, 7, REAL_NOW)
    assert [d.key for d in right if d.delete] == [entries[-1].key]


def test_future_named_objects_are_kept_and_reported_not_counted_as_newest():
    future = _entry(-30)  # named 30 days ahead by a wrong clock
    future = Entry(future.store, future.name, future.location, 100, REAL_NOW, key=future.key, source="dr.backup",
                   tier=tiers.HOURLY)
    entries = [future, *(_entry(d) for d in (0.1, 0.5, 1, 5))]
    decisions = {d.key: d for d in decide_s3(entries, 7, REAL_NOW)}
    assert not decisions[future.key].delete and "future" in decisions[future.key].reason
    assert decisions[entries[-1].key].delete  # 5 days old, hourly, not among the newest three real ones
