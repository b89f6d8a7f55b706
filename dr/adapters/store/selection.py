"""Which snapshot ``latest``, ``latest~N`` and ``latest-verified`` name: newest by evidence, not by name alone.
Pure ordering over entries, plus ``newest``, which asks the store to describe the candidate it picks."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TextIO

from dr.adapters.store.protocol import Entry, SnapshotStore
from dr.adapters.talosapi.h2stream import printable
from dr.core import spelling
from dr.core.errors import SnapshotNotFound
from dr.core.timefmt import iso_utc

FUTURE_SLACK = timedelta(minutes=5)  # clock skew allowed between a name's time, S3's clock and ours


def _effective_time(e: Entry) -> datetime:
    """When a snapshot can have been taken at the latest: its name's time, but never after S3 stored it (S3's clock,
    LastModified, bounds what a wrong clock wrote into the name)."""
    return min(e.name.taken_at, e.modified) if e.store == "s3" else e.name.taken_at


def named_after_upload(e: Entry) -> bool:
    """The name's time is after S3 stored the object: the clock that named it was ahead."""
    return e.store == "s3" and e.name.taken_at > e.modified + FUTURE_SLACK


def suspicious(e: Entry, now: datetime) -> str | None:
    """Why ``e``'s name cannot be trusted for "newest", or None: a time in the future, or after S3 stored it."""
    if e.name.taken_at > now + FUTURE_SLACK:
        return f"its name says {iso_utc(e.name.taken_at)}, in the future"
    if e.store == "s3" and e.name.taken_at > e.modified + FUTURE_SLACK:
        return f"its name says {iso_utc(e.name.taken_at)}, after S3 stored it ({iso_utc(e.modified)})"
    return None


def candidates(entries: Iterable[Entry]) -> list[Entry]:
    """What ``latest~N`` counts, newest first by evidence: every snapshot but the safety ones."""
    return sorted((e for e in entries if not e.name.safety), key=lambda e: (_effective_time(e), e.name.name),
                  reverse=True)


def latest_steps(entries: Iterable[Entry], now: datetime, n: int = 3) -> dict[str, str]:
    """Which names ``latest``, ``latest~1``, ... pick (the first ``n``), for `list` to mark: the order ``newest``
    uses, names it refuses skipped (a cluster recorded in an object's metadata is checked only by ``newest``)."""
    fine = [e for e in candidates(entries) if suspicious(e, now) is None and e.size != 0]
    return {e.name.name: "latest" + (f"~{i}" if i else "") for i, e in enumerate(fine[:n])}


def newest(store: SnapshotStore, *, now: datetime | None = None, cluster: str | None = None,
           err: TextIO | None = None, skip: int = 0, verified_only: bool = False) -> Entry:
    """The newest snapshot by evidence, not by name alone (anyone who can write a name with a
    later time would otherwise choose what a restore reads): ordered by the earlier of
    its name's time and S3's LastModified, names in the future or after their upload refused, and (when ``cluster``
    is known) objects recorded for another cluster skipped. ``skip`` steps back that many (``latest~N``);
    ``verified_only`` keeps only snapshots with a standing verification (``latest-verified``)."""
    now = now or datetime.now(UTC)
    ordered = candidates(store.list())
    if not ordered:
        raise SnapshotNotFound(f"there are no snapshots in {store.where}",
                               f"take one with `{spelling.command('backup', '--save-to-s3')}`, name a local file, or "
                               "pass --prefix where they are")
    passed = 0
    refused: list[str] = []
    for e in ordered:
        why = suspicious(e, now) or ("it is empty (0 bytes)" if e.size == 0 else None)  # empty: never one
        if why is None:
            e = store.describe(e)
            if cluster and e.cluster and e.cluster not in (cluster, "unknown"):
                why = f"it was recorded for cluster {e.cluster}, not {cluster}"
            elif verified_only and e.verification is None:
                continue
        if why is not None:
            refused.append(f"{e.location}: {why}")
            continue
        if passed == skip:
            for line in refused:
                if err is not None:
                    print(f"note: not a candidate for latest: {printable(line)}", file=err)
            uploaded_later = [o for o in ordered if o.modified > e.modified and not o.name.safety
                              and o.name.taken_at < e.name.taken_at - FUTURE_SLACK and suspicious(o, now) is None]
            if uploaded_later and err is not None and e.store == "s3" and skip == 0:
                o = max(uploaded_later, key=lambda x: x.modified)
                print(f"note: {o.location} was uploaded after it (S3 stored it at {iso_utc(o.modified)}) but its name "
                      f"says an earlier time ({iso_utc(o.name.taken_at)}): an older snapshot uploaded late, or a clock "
                      "that was behind; name it if that is the one you mean", file=err)
            return e
        passed += 1
    what = "verified snapshot" if verified_only else "snapshot"
    detail = f"; refused: {'; '.join(refused)}" if refused else ""
    raise SnapshotNotFound(f"there is no {'' if not skip else f'{skip + 1}th newest '}{what} in {store.where} "
                           f"({len(ordered)} listed{detail})",
                           f"verify one with `{spelling.command('verify')}`" if verified_only else
                           f"list them with `{spelling.command('list')}`")
