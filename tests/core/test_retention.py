from datetime import UTC, datetime, timedelta

import pytest

from dr.core.retention import Policy, apply_policy, future_dated

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _snaps(*ages_days):
    return [(f"s{i}", NOW - timedelta(days=a)) for i, a in enumerate(ages_days)]


@pytest.mark.parametrize(
    "ages, keep_days, kept",
    [
        ((), 7, []),
        ((1,), 7, ["s0"]),
        ((30,), 7, ["s0"]),  # the only snapshot is kept even when old
        ((30, 40), 7, ["s0", "s1"]),  # the newest three always stay, whatever their dates
        ((1, 2, 3, 30, 40), 7, ["s0", "s1", "s2"]),
        ((1, 6.9, 7.1, 8, 9, 10), 7, ["s0", "s1", "s2"]),
        ((0, 1, 2, 3, 4), 0, ["s0", "s1", "s2"]),
        ((-1, 1, 2, 12, 13), 7, ["s0", "s1", "s2", "s3"]),  # future-dated: kept, and not one of the newest three
        ((1, -1, 2, 12, 13), 7, ["s0", "s1", "s2", "s3"]),
        ((3, 3, 9, 10, 11), 7, ["s0", "s1", "s2"]),
        ((0, 8, 9, 10, 11), 7, ["s0", "s1", "s2", "s3", "s4"]),  # the one before the newest is old: suspended
    ],
)
def test_policy_table(ages, keep_days, kept):
    decisions = apply_policy(_snaps(*ages), Policy(keep_days), NOW)
    assert sorted(d.name for d in decisions if d.keep) == sorted(kept)
    assert len(decisions) == len(ages)
    assert all(d.reason for d in decisions)


def test_result_is_newest_first_and_boundary_inclusive():
    snaps = _snaps(7, 1, 3)
    d = apply_policy(snaps, Policy(7), NOW)
    assert [x.name for x in d] == ["s1", "s2", "s0"]
    assert d[-1].keep  # exactly 7 days old is kept


def test_negative_keep_days_rejected():
    with pytest.raises(ValueError):
        apply_policy([], Policy(-1), NOW)


def test_clock_thirty_days_ahead_deletes_nothing():
    """Hostile-inputs 39: three real snapshots 1-3 days old and the one a clock 30 days ahead just named."""
    real_now = NOW
    snaps = [(f"real{i}", real_now - timedelta(days=d)) for i, d in enumerate((1, 2, 3))]
    wrong_now = real_now + timedelta(days=30)
    snaps.append(("new", wrong_now))
    decisions = apply_policy(snaps, Policy(7), wrong_now, protect=("new",))
    assert all(d.keep for d in decisions), decisions
    # ... and once the clock is right again, the future-dated one is reported and is not "the newest".
    snaps.append(("fixed", real_now))
    decisions = apply_policy(snaps, Policy(7), real_now)
    assert all(d.keep for d in decisions)
    assert [d.name for d in future_dated(decisions)] == ["new"]


def test_clock_thirty_days_behind_keeps_what_it_just_took():
    wrong_now = NOW - timedelta(days=30)
    snaps = [(f"real{i}", NOW - timedelta(days=d)) for i, d in enumerate((1, 2, 3, 4))] + [("new", wrong_now)]
    decisions = apply_policy(snaps, Policy(7), wrong_now, protect=("new",))
    assert all(d.keep for d in decisions)
    assert {d.name for d in future_dated(decisions)} == {"real0", "real1", "real2", "real3"}


def test_evidence_order_decides_the_newest():
    """S3: the newest by upload (LastModified) stay, whatever their names say."""
    snaps = [("a", NOW - timedelta(days=40)), ("b", NOW - timedelta(days=1)), ("c", NOW - timedelta(days=2)),
             ("d", NOW - timedelta(days=50)), ("e", NOW - timedelta(days=60))]
    decisions = apply_policy(snaps, Policy(7), NOW, order=["d", "b", "c", "a", "e"])
    assert {d.name for d in decisions if d.keep} == {"d", "b", "c"}  # by name, "a" would have stayed instead of "d"
