"""`talos-dr status`'s verdicts: what would be lost now and what will break, one ``Check`` per line. Pure: the facts
(``StatusFacts``, gathered by ``dr.commands.status``) and the clock are arguments.

Each check is OK, WARN or FAIL, or UNCHECKED when its facts could not be read (no credentials, node down): that is a
line of its own, never silence. A line that is not OK names the command that fixes it. The exit code is 0 only when
every line is OK; 26 (STATUS_WARN) when the worst is a WARN or an UNCHECKED; 27 (STATUS_FAIL) when anything fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dr.core.errors import ExitCode
from dr.core.etcd_health import QUOTA_WARN_PERCENT, EtcdHealth
from dr.core.freshness import STALE_FACTOR
from dr.core.member_choice import Judgement
from dr.core.timefmt import human_age, human_interval, iso_utc

OK, WARN, FAIL, UNCHECKED = "OK", "WARN", "FAIL", "UNCHECKED"
_RANK = {OK: 0, UNCHECKED: 1, WARN: 2, FAIL: 3}

CERT_WARN_DAYS = 30  # as the alarm (infra/alarms.py) and `pulumi preview` (infra/providers/backup_check.py)
VERIFY_WARN_DAYS = 7  # a snapshot nobody has restored in a throwaway etcd for a week is a guess
QUOTA_FAIL_PERCENT = 95.0  # NOSPACE is one burst of writes away
BACKUP_FIX = "talos-dr backup --save-to-s3"


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # OK | WARN | FAIL | UNCHECKED
    summary: str
    fix: str | None = None  # the command (and why) when not OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunRecord:
    """The newest scheduled run the metrics show: when, and whether it stored a snapshot."""

    at: datetime
    ok: bool


@dataclass(frozen=True)
class BucketFacts:
    versioning: str | None  # "Enabled", "Suspended", or None (never enabled)
    tiers_expiring: Sequence[str]  # retention tiers with an expiring lifecycle rule
    tiers_expected: Sequence[str]
    object_lock_days: int | None  # default retention days when Object Lock is on; None: off
    object_lock_mode: str | None = None


@dataclass
class StatusFacts:
    """What the command could read. ``None`` with a reason in ``unchecked[<name>]`` means it could not be read."""

    interval: timedelta  # how often the schedule runs
    cluster: str = "unknown"
    bucket: str | None = None
    newest_s3: datetime | None = None
    newest_s3_name: str | None = None
    newest_local: datetime | None = None
    newest_local_name: str | None = None
    last_run: RunRecord | None = None
    last_success: datetime | None = None  # the newest run that stored a snapshot (may be older than last_run)
    alarms_firing: Sequence[str] = ()  # names of the backup alarms in ALARM state
    alarms_seen: int = 0  # how many of the backup alarms exist
    last_verified: datetime | None = None
    last_verified_name: str | None = None
    credential_not_after: datetime | None = None  # the scheduled runs' os:etcd:backup certificate
    talosconfig_not_after: datetime | None = None  # the admin talosconfig's client certificate
    etcd: EtcdHealth | None = None
    members: Judgement | None = None  # several control-plane nodes: each etcd member's state (dr.core.member_choice)
    bucket_facts: BucketFacts | None = None
    log_group: str | None = None
    unchecked: dict[str, str] = field(default_factory=dict)  # check name -> why it could not be checked


# Check names, in the order they are shown: what would be lost first, then what will break.
S3_SNAPSHOT = "newest snapshot in S3"
LOCAL_SNAPSHOT = "newest local snapshot"
SCHEDULED_RUN = "last scheduled run"
ALARMS = "backup alarms"
VERIFIED = "last verification"
ETCD = "etcd on the node"
MEMBERS = "etcd members"  # shown only with several control-plane nodes
CREDENTIAL = "backup credential"
TALOSCONFIG = "admin talosconfig"
VERSIONING = "bucket versioning"
LIFECYCLE = "lifecycle tiers"
OBJECT_LOCK = "object lock"
ORDER = (S3_SNAPSHOT, LOCAL_SNAPSHOT, SCHEDULED_RUN, ALARMS, VERIFIED, ETCD, CREDENTIAL, TALOSCONFIG, VERSIONING,
         LIFECYCLE, OBJECT_LOCK)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _ago(then: datetime, now: datetime) -> str:
    return f"{human_age((now - then).total_seconds())} ago ({iso_utc(then)})"


def snapshot_check(f: StatusFacts, now: datetime) -> Check:
    """The RPO now: how old the newest snapshot in S3 is, against the schedule."""
    stale = STALE_FACTOR * f.interval
    every = human_interval(f.interval)
    if f.newest_s3 is None:
        return Check(S3_SNAPSHOT, FAIL, f"none in s3://{f.bucket or '?'}: a lost node loses everything",
                     f"`{BACKUP_FIX}` takes one now; then `pulumi up` if the schedule is missing")
    age = now - f.newest_s3
    summary = f"{f.newest_s3_name}, {_ago(f.newest_s3, now)}: losing the node now loses the last {human_age(age.total_seconds())}"
    if age >= max(timedelta(days=1), 4 * f.interval):
        return Check(S3_SNAPSHOT, FAIL, summary + f" (the schedule runs every {every})",
                     f"`{BACKUP_FIX}` now; then find why the schedule stopped (see the lines below)")
    if age >= stale:
        return Check(S3_SNAPSHOT, WARN, summary + f" (older than {STALE_FACTOR} intervals of {every})",
                     f"`{BACKUP_FIX}` now; the scheduled run and alarm lines below say why none came")
    return Check(S3_SNAPSHOT, OK, summary)


def local_check(f: StatusFacts, now: datetime) -> Check:
    """Local snapshots are taken by hand (`talos-dr backup`); informational unless S3 has none either."""
    if f.newest_local is None:
        state = FAIL if f.newest_s3 is None else OK
        return Check(LOCAL_SNAPSHOT, state, "none in this folder (the scheduled ones are in S3)",
                     f"`{BACKUP_FIX}`" if state != OK else None)
    return Check(LOCAL_SNAPSHOT, OK, f"{f.newest_local_name}, {_ago(f.newest_local, now)}")


def run_check(f: StatusFacts, now: datetime) -> Check:
    logs = f"`aws logs tail {f.log_group} --since 3h`" if f.log_group else "the Lambda's log"
    if f.last_run is None:
        return Check(SCHEDULED_RUN, FAIL, f"no run reported in the last {STALE_FACTOR + 1} intervals: the schedule "
                     "is not firing or the function fails before it starts",
                     f"`pulumi up` restores the schedule and function; {logs} shows what happens")
    when = _ago(f.last_run.at, now)
    if not f.last_run.ok:
        last_ok = f"; the last that stored one: {_ago(f.last_success, now)}" if f.last_success else ""
        return Check(SCHEDULED_RUN, FAIL, f"failed {when}{last_ok}",
                     f"{logs} says why; `{BACKUP_FIX}` takes one now")
    if now - f.last_run.at >= STALE_FACTOR * f.interval:
        return Check(SCHEDULED_RUN, WARN, f"succeeded {when}, none since",
                     f"`pulumi up` if the schedule was disabled; {logs}")
    return Check(SCHEDULED_RUN, OK, f"succeeded {when}")


def alarms_check(f: StatusFacts) -> Check:
    if f.alarms_firing:
        return Check(ALARMS, FAIL, f"{len(f.alarms_firing)} firing: {', '.join(f.alarms_firing)}",
                     "each alarm's description says what to do (`aws cloudwatch describe-alarms --state-value ALARM`)")
    if f.alarms_seen == 0:
        return Check(ALARMS, WARN, "none found: nobody is told when backups stop",
                     "`pulumi up` creates them (scheduledSnapshots); set alertEmails to be mailed")
    return Check(ALARMS, OK, f"{f.alarms_seen} defined, none firing")


def verified_check(f: StatusFacts, now: datetime) -> Check:
    if f.last_verified is None:
        return Check(VERIFIED, WARN, "no snapshot has been verified (restored in a throwaway etcd)",
                     "`talos-dr verify latest`")
    summary = f"{f.last_verified_name or 'a snapshot'}, {_ago(f.last_verified, now)}"
    if now - f.last_verified >= timedelta(days=VERIFY_WARN_DAYS):
        return Check(VERIFIED, WARN, summary + f" (more than {VERIFY_WARN_DAYS} days)", "`talos-dr verify latest`")
    return Check(VERIFIED, OK, summary)


def etcd_check(f: StatusFacts) -> Check:
    e = f.etcd
    assert e is not None
    size = f"DB {_size(e.db_size)} of a {_size(e.quota)} quota ({e.percent:.0f}%)"
    if e.alarms:
        return Check(ETCD, FAIL, f"alarm {', '.join(e.alarms)} active; {size}",
                     "free space with `talosctl etcd defrag`, then `talosctl etcd alarm disarm` (docs/MONITORING.md); "
                     "a snapshot taken now carries the alarm into a restore")
    if e.percent >= QUOTA_FAIL_PERCENT:
        return Check(ETCD, FAIL, size, "`talosctl etcd defrag` now, and find what fills etcd")
    if e.percent >= QUOTA_WARN_PERCENT:
        return Check(ETCD, WARN, size, "`talosctl etcd defrag`, and find what fills etcd")
    return Check(ETCD, OK, size + ", no alarms")


def members_check(j: Judgement) -> Check:
    """Several control-plane nodes: every voter healthy (OK), a quorum with a member lost (WARN: one more loss stops
    the cluster), or no quorum (FAIL: backups refuse, exit 28)."""
    bad = "; ".join(s.describe() for s in j.states if not s.healthy)
    head = f"{len(j.agreeing)} of {j.voting_count} voting members healthy"
    if not j.has_quorum:
        return Check(MEMBERS, FAIL, f"NO quorum: {head}, {j.needed} needed; {bad}",
                     "docs/RUNBOOK.md, quorum lost: `talos-dr restore` (backups refuse until then)")
    head += f", following leader {j.leader:x}"
    if len(j.agreeing) < j.voting_count or bad:
        return Check(MEMBERS, WARN, f"{head}; one more loss stops the cluster: {bad}",
                     "replace the lost member without a restore (docs/RUNBOOK.md)")
    return Check(MEMBERS, OK, head)


def cert_check(name: str, end: datetime, now: datetime, fix: str) -> Check:
    days = (end - now).total_seconds() / 86400
    if days < 0:
        return Check(name, FAIL, f"expired on {iso_utc(end)}", fix)
    summary = f"valid until {iso_utc(end)} ({int(days)} days)"
    if days < CERT_WARN_DAYS:
        return Check(name, WARN, summary, fix)
    return Check(name, OK, summary)


def bucket_checks(b: BucketFacts) -> list[Check]:
    out = []
    if b.versioning == "Enabled":
        out.append(Check(VERSIONING, OK, "enabled: an overwritten or deleted snapshot can be recovered"))
    else:
        out.append(Check(VERSIONING, FAIL, f"{(b.versioning or 'never enabled').lower()}: a deleted snapshot is gone",
                         "`pulumi up` turns it back on (infra/bucket.py)"))
    missing = [t for t in b.tiers_expected if t not in b.tiers_expiring]
    if missing:
        out.append(Check(LIFECYCLE, WARN, f"no expiring rule for tier(s) {', '.join(missing)}: those snapshots are "
                         "kept (and paid for) forever", "`pulumi up` writes the rules again"))
    else:
        out.append(Check(LIFECYCLE, OK, f"{', '.join(b.tiers_expected)} expire by rule"))
    if b.object_lock_days:
        out.append(Check(OBJECT_LOCK, OK, f"{(b.object_lock_mode or 'governance').lower()} mode, "
                         f"{b.object_lock_days} days"))
    else:
        out.append(Check(OBJECT_LOCK, OK, "off (snapshotObjectLockDays is 0)"))
    return out


def evaluate(f: StatusFacts, now: datetime) -> list[Check]:
    """Every check, in ``ORDER``; what could not be read is an UNCHECKED line saying why."""
    def unchecked(name: str) -> Check | None:
        why = f.unchecked.get(name)
        return Check(name, UNCHECKED, f"could not check: {why}") if why else None

    checks: list[Check] = []
    for name in ORDER:
        if name == ETCD and (f.members is not None or MEMBERS in f.unchecked):  # several nodes only
            checks.append(unchecked(MEMBERS) or members_check(f.members))  # type: ignore[arg-type]
        c = unchecked(name) or _one(name, f, now)
        # a fact nobody read and nobody explained is still a line: never silence
        checks.append(c or Check(name, UNCHECKED, "could not check: nothing reported it"))
    return checks


def _one(name: str, f: StatusFacts, now: datetime) -> Check | None:
    if name == S3_SNAPSHOT:
        return snapshot_check(f, now)
    if name == LOCAL_SNAPSHOT:
        return local_check(f, now)
    if name == SCHEDULED_RUN:
        return run_check(f, now)
    if name == ALARMS:
        return alarms_check(f)
    if name == VERIFIED:
        return verified_check(f, now)
    if name == ETCD:
        return etcd_check(f) if f.etcd is not None else None
    if name == CREDENTIAL:
        return cert_check(CREDENTIAL, f.credential_not_after, now,
                          "`pulumi up` mints a new one for the current 180-day period") if f.credential_not_after else None
    if name == TALOSCONFIG:
        return cert_check(TALOSCONFIG, f.talosconfig_not_after, now,
                          "`pulumi up`, then `pulumi stack output talosconfig --show-secrets > .talos/talosconfig`"
                          ) if f.talosconfig_not_after else None
    if f.bucket_facts is None:
        return None
    return next(c for c in bucket_checks(f.bucket_facts) if c.name == name)


def worst(checks: Sequence[Check]) -> str:
    return max((c.state for c in checks), key=_RANK.__getitem__, default=OK)


def exit_code(checks: Sequence[Check]) -> ExitCode:
    """0 only when every line is OK; STATUS_FAIL when any fails; STATUS_WARN otherwise (a WARN, or something that
    could not be checked: a clean bill of health needs every line)."""
    w = worst(checks)
    if w == FAIL:
        return ExitCode.STATUS_FAIL
    if w in (WARN, UNCHECKED):
        return ExitCode.STATUS_WARN
    return ExitCode.OK


def rpo_seconds(f: StatusFacts, now: datetime) -> float | None:
    """What losing everything now would lose: the age of the newest snapshot anywhere (None: there is none)."""
    newest = max((t for t in (f.newest_s3, f.newest_local) if t is not None), default=None)
    return None if newest is None else (now - newest).total_seconds()
