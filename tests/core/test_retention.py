from datetime import UTC, datetime, timedelta

import pytest

from dr.core.retention import Policy, apply_policy

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _snaps(*ages_days):
    return [(f"s{i}", NOW - timedelta(days=a)) for i, a in enumerate(ages_days)]


@pytest.mark.parametrize(
    "ages, keep_days, kept",
    [
        ((), 7, []),
        ((1,), 7, ["s0"]),
        ((30,), 7, ["s0"]),  # the only snapshot is kept even when old
        ((30, 40), 7, ["s0"]),  # the newest old one is kept, the older pruned
        ((1, 6.9, 7.1, 8), 7, ["s0", "s1"]),
        ((0, 1, 2), 0, ["s0"]),
        ((-1, 10), 7, ["s0"]),  # future-dated newest
        ((10, -1), 7, ["s1"]),
        ((3, 3, 9), 7, ["s0", "s1"]),
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
