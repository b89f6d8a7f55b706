"""Local retention: a pure policy over snapshot times. The clock is an argument, never read here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Policy:
    keep_days: float = 7.0


@dataclass(frozen=True)
class Decision:
    name: str
    taken_at: datetime
    keep: bool
    reason: str


def apply_policy(snapshots: Sequence[tuple[str, datetime]], policy: Policy, now: datetime) -> list[Decision]:
    """Decide, for each ``(name, taken_at)``, whether to keep it. Newest first in the result.

    Keeps every snapshot younger than ``policy.keep_days`` and always the newest one, whatever its age: pruning must
    never leave the cluster without a backup. Snapshots dated in the future (clock skew) are kept.
    """
    if policy.keep_days < 0:
        raise ValueError("keep_days must be >= 0")
    cutoff = now - timedelta(days=policy.keep_days)
    ordered = sorted(snapshots, key=lambda s: (s[1], s[0]), reverse=True)
    out: list[Decision] = []
    for i, (name, ts) in enumerate(ordered):
        if i == 0:
            out.append(Decision(name, ts, True, "newest snapshot (always kept)"))
        elif ts > now:
            out.append(Decision(name, ts, True, "dated in the future (clock skew?): kept"))
        elif ts >= cutoff:
            out.append(Decision(name, ts, True, f"younger than {policy.keep_days:g} days"))
        else:
            out.append(Decision(name, ts, False, f"older than {policy.keep_days:g} days"))
    return out
