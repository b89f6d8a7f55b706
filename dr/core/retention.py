"""Retention: a pure policy over snapshot times. The clock is an argument, never read here.

A wrong clock must never delete backups (with the clock 30 days ahead, every real 1-3-day-old
snapshot looked 31-33 days old and was pruned). So, whatever the dates say:
- the ``KEEP_NEWEST`` newest snapshots (by the caller's evidence order) always stay;
- a snapshot dated in the future (beyond ``FUTURE_SLACK``) is kept and reported, and never counts as "newest";
- age pruning is suspended while the snapshot before the newest is itself older than the limit: either the clock
  jumped forward (the newest was just named by it) or backups stopped for that long; neither is a reason to delete.
  It resumes by itself once a second recent snapshot exists;
- names in ``protect`` (the snapshot this run just took) are never pruned, even with a clock far behind.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

KEEP_NEWEST = 3
FUTURE_SLACK = timedelta(minutes=5)  # clock skew allowed between a name's time and ours


@dataclass(frozen=True)
class Policy:
    keep_days: float = 7.0
    keep_newest: int = KEEP_NEWEST


@dataclass(frozen=True)
class Decision:
    name: str
    taken_at: datetime
    keep: bool
    reason: str


def apply_policy(snapshots: Sequence[tuple[str, datetime]], policy: Policy, now: datetime, *,
                 protect: Collection[str] = (), order: Sequence[str] | None = None,
                 limits: dict[str, float] | None = None) -> list[Decision]:
    """Decide, for each ``(name, taken_at)``, whether to keep it; newest first in the result (see the module doc).

    ``order`` is the evidence order, newest first (e.g. S3's LastModified), when it is better than the times;
    ``limits`` a per-name age limit in days (an S3 tier's), else ``policy.keep_days``."""
    if policy.keep_days < 0:
        raise ValueError("keep_days must be >= 0")
    if order is not None:
        rank = {n: i for i, n in enumerate(order)}
        ordered = sorted(snapshots, key=lambda s: rank.get(s[0], len(rank)))
    else:
        ordered = sorted(snapshots, key=lambda s: (s[1], s[0]), reverse=True)
    future = {name for name, ts in ordered if ts > now + FUTURE_SLACK}
    trusted = [(n, ts) for n, ts in ordered if n not in future]

    def limit(name: str) -> float:
        return (limits or {}).get(name, policy.keep_days)

    # keep_days 0 asks for "only the newest few": no age to wait out.
    suspended = (len(trusted) >= 2 and limit(trusted[1][0]) > 0
                 and trusted[1][1] < now - timedelta(days=limit(trusted[1][0])))
    newest = {n for n, _ in trusted[: max(policy.keep_newest, 1)]}
    out: list[Decision] = []
    for name, ts in ordered:
        days = limit(name)
        if name in future:
            reason, keep = f"dated in the future ({ts:%Y-%m-%d %H:%M} UTC; a wrong clock named it): kept, not " \
                           "trusted as the newest", True
        elif name in protect:
            reason, keep = "taken by this run (never pruned by it)", True
        elif name in newest:
            reason, keep = f"one of the {policy.keep_newest} newest (always kept, whatever the dates)", True
        elif ts >= now - timedelta(days=days):
            reason, keep = f"younger than {days:g} days", True
        elif suspended:
            reason, keep = (f"older than {days:g} days, but so is the one before the newest: the clock jumped "
                            "forward or backups stopped, so nothing is pruned by age until a second recent one "
                            "exists"), True
        else:
            reason, keep = f"older than {days:g} days", False
        out.append(Decision(name, ts, keep, reason))
    return out


def future_dated(decisions: Sequence[Decision]) -> list[Decision]:
    """The decisions that kept a snapshot because its date is in the future: to be reported."""
    return [d for d in decisions if d.reason.startswith("dated in the future")]


def suspended(decisions: Sequence[Decision]) -> bool:
    return any("nothing is pruned by age" in d.reason for d in decisions)
