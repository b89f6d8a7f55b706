from datetime import UTC, datetime, timedelta, timezone

import pytest

from dr.core.naming import is_safety_snapshot, parse_snapshot_name, snapshot_name


def test_round_trip():
    ts = datetime(2026, 11, 24, 3, 4, 5, tzinfo=UTC)
    name = snapshot_name(ts)
    assert name == "etcd-snapshot-20261124T030405Z.db"
    assert parse_snapshot_name(name) == ts
    assert parse_snapshot_name("snapshots/" + name) == ts


def test_other_timezones_become_utc():
    ts = datetime(2026, 1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    assert snapshot_name(ts) == "etcd-snapshot-20251231T230000Z.db"


def test_names_sort_by_time():
    base = datetime(2026, 1, 1, tzinfo=UTC)
    times = [base + timedelta(seconds=s) for s in (86400 * 40, 5, 3600, 0)]
    assert sorted(snapshot_name(t) for t in times) == [snapshot_name(t) for t in sorted(times)]


@pytest.mark.parametrize("bad", ["etcd-snapshot-20261124T030405.db", "etcd-snapshot-20261324T030405Z.db",
                                 "etcd-snapshot-20261124T030405Z.db.part", "x.db", "", "snapshots/"])
def test_non_names_are_rejected(bad):
    assert parse_snapshot_name(bad) is None


def test_safety_names():
    ts = datetime(2026, 11, 24, tzinfo=UTC)
    n = snapshot_name(ts, safety=True)
    assert n.startswith("pre-restore-") and is_safety_snapshot(n)
    assert parse_snapshot_name(n) == ts
