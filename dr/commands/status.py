"""`talos-dr status`: one screen of what would be lost now and what will break.

    talos-dr status            # OK / WARN / FAIL per line, and the command that fixes each one that is not OK
    talos-dr status --json

Lines, most urgent facts first: the newest snapshot in S3 and here (the RPO now), the last scheduled run and its
outcome, the backup alarms, the last verification, the node's etcd (DB size against its quota, alarms), the backup
credential and the admin talosconfig (when they expire), and the bucket (versioning, lifecycle tiers, Object Lock).

Where each fact comes from: snapshots from the bucket and ``.talos/snapshots``; the scheduled runs, the backup
credential's days left and the alarms from CloudWatch (the Lambda's Embedded Metric Format metrics: an object in S3
shows a run that succeeded, never one that failed); etcd from the node itself (EtcdStatus, EtcdAlarmList, with the
talosconfig); the talosconfig's certificate from the file. What cannot be read (no AWS credentials, the node down) is
a line of its own. The verdicts are ``dr.core.status`` (pure). Exit 0 only when every line is OK, 26 when the worst
is a warning or something could not be checked, 27 when something fails.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TextIO

from dr.adapters import cloudwatch
from dr.commands import cli
from dr.commands.settings import Resolver, add_common_flags
from dr.core import spelling, tiers, timefmt
from dr.core import status as st
from dr.core.errors import ConfigError, DRError
from dr.core.etcd_health import DEFAULT_QUOTA_BYTES
from dr.core.freshness import STALE_FACTOR, schedule_interval

PROG = spelling.command("status")
ENV_SCHEDULE = "DR_SNAPSHOT_SCHEDULE"
DEFAULT_SCHEDULE = "rate(1 hour)"  # infra/config.py snapshotSchedule's default
NODE_TIMEOUT = 10.0  # etcd status from the node: a small answer, or etcd is not answering
VERIFIED_SCAN = 20  # S3 objects whose tags are read for the last verification (one request each)


def _parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, timefmt.ISO_UTC_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def _why(exc: Exception) -> str:
    return str(exc).split(" — ")[0] if isinstance(exc, DRError) else f"{type(exc).__name__}: {exc}"


def _snapshots(r: Resolver, f: st.StatusFacts) -> None:
    verified: list[tuple[datetime, str]] = []
    try:
        local = [r.local_store().describe(e) for e in r.local_store().list()]
    except (DRError, OSError) as exc:
        f.unchecked[st.LOCAL_SNAPSHOT] = _why(exc)
        local = []
    if local:
        newest = max(local, key=lambda e: e.name.taken_at)
        f.newest_local, f.newest_local_name = newest.name.taken_at, newest.name.plain
    verified += [(t, e.name.plain) for e in local if e.verification and (t := _parse_iso(e.verification.verified_at))]
    try:
        store = r.s3_store()
        f.bucket = store.bucket
        remote = sorted(store.list(), key=lambda e: e.name.taken_at, reverse=True)
    except ConfigError as exc:
        f.unchecked[st.S3_SNAPSHOT] = f"no bucket configured ({exc.message}); pass --bucket or set DR_BUCKET"
        return
    except DRError as exc:
        f.unchecked[st.S3_SNAPSHOT] = _why(exc)
        return
    if remote:
        f.newest_s3, f.newest_s3_name = remote[0].name.taken_at, remote[0].name.plain
    for e in remote[:VERIFIED_SCAN]:
        try:
            v = store.describe(e).verification
        except DRError:
            continue
        if v and (t := _parse_iso(v.verified_at)):
            verified.append((t, e.name.plain))
    if verified:
        f.last_verified, f.last_verified_name = max(verified)


def _cloudwatch(r: Resolver, f: st.StatusFacts, now: datetime) -> float | None:
    """Runs, credential days and alarms; returns the etcd quota the runs reported (None: not reported)."""
    names = (st.SCHEDULED_RUN, st.ALARMS, st.CREDENTIAL)
    try:
        client = cloudwatch.make_client(r.region)
        runs = cloudwatch.runs(client, f.cluster, now, (STALE_FACTOR + 1) * f.interval)
        alarms = cloudwatch.backup_alarms(client, f.cluster)
    except Exception as exc:  # no credentials, no network: say so on each line that needed it
        for name in names:
            f.unchecked[name] = f"CloudWatch not readable ({_why(exc)})"
        return None
    if runs.last_at is not None and runs.last_ok is not None:
        f.last_run = st.RunRecord(runs.last_at, runs.last_ok)
    f.last_success = runs.last_success
    f.alarms_seen, f.alarms_firing = len(alarms), cloudwatch.firing(alarms)
    if runs.credential_days is not None:
        f.credential_not_after = runs.credential_days.at + timedelta(days=runs.credential_days.value)
    else:
        f.unchecked[st.CREDENTIAL] = (f"no scheduled run reported its days left in the last {STALE_FACTOR + 1} "
                                      "intervals")
    return runs.etcd_quota


def _node(r: Resolver, f: st.StatusFacts, quota: int) -> None:
    from dr.adapters.talosctl import talosconfig_credentials
    from dr.commands.backup import talos_client
    from dr.core.cert_expiry import not_after

    try:
        creds = talosconfig_credentials(r.talosconfig)
        f.talosconfig_not_after = not_after(creds.cert_pem)
    except Exception as exc:
        f.unchecked[st.TALOSCONFIG] = _why(exc)
        f.unchecked[st.ETCD] = f"no usable talosconfig ({_why(exc)})"
        return
    if _members(r, f, quota, creds):
        return
    try:
        with talos_client(r, NODE_TIMEOUT) as client:
            f.etcd = client.etcd_health(quota, timeout=NODE_TIMEOUT)
    except Exception as exc:
        f.unchecked[st.ETCD] = f"the node did not answer ({_why(exc)})"


def _members(r: Resolver, f: st.StatusFacts, quota: int, creds) -> bool:
    """Several control-plane nodes: every member's state (``f.members``) and the etcd line from a healthy member
    (the one a backup would use). False with one node: the single-node check runs as before."""
    from dr.adapters.talosapi import TalosClient
    from dr.adapters.talosapi.members import ask_all
    from dr.commands.backup import cluster_nodes, node_endpoint, split_endpoint
    from dr.core import member_choice

    try:
        nodes = cluster_nodes(r)
    except Exception as exc:
        f.unchecked[st.MEMBERS] = f"the stack's nodes could not be read ({_why(exc)})"
        return False
    if len(nodes) <= 1:
        return False

    def dial(n):
        host, port = split_endpoint(node_endpoint(r, n))
        return TalosClient(host, creds, port=port, nodes=[n.private_ip], timeout=3 * NODE_TIMEOUT + 5)

    answers = ask_all(nodes, dial, quota=quota, timeout=NODE_TIMEOUT)
    f.members = member_choice.judge(nodes, answers)
    by_ip = {a.node.private_ip: a for a in answers}
    source = next((s for s in f.members.agreeing), None)
    if source is not None and by_ip[source.node.private_ip].status is not None:
        f.etcd = by_ip[source.node.private_ip].status
    else:
        f.unchecked[st.ETCD] = "no healthy member answered (see the etcd members line)"
    return True


def _bucket(r: Resolver, f: st.StatusFacts) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    if f.bucket is None:
        for name in (st.VERSIONING, st.LIFECYCLE, st.OBJECT_LOCK):
            f.unchecked[name] = "no bucket known"
        return
    s3c = r.s3_client()
    try:
        versioning = s3c.get_bucket_versioning(Bucket=f.bucket).get("Status")
        try:
            rules = s3c.get_bucket_lifecycle_configuration(Bucket=f.bucket).get("Rules", [])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
                raise
            rules = []
        try:
            lock = s3c.get_object_lock_configuration(Bucket=f.bucket).get("ObjectLockConfiguration", {})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ObjectLockConfigurationNotFoundError":
                raise
            lock = {}
    except (ClientError, BotoCoreError) as exc:
        for name in (st.VERSIONING, st.LIFECYCLE, st.OBJECT_LOCK):
            f.unchecked[name] = f"s3://{f.bucket} not readable ({exc})"
        return
    f.bucket_facts = st.BucketFacts(
        versioning=versioning, tiers_expiring=expiring_tiers(rules), tiers_expected=tuple(tiers.TIERS),
        object_lock_days=(lock.get("Rule", {}).get("DefaultRetention", {}).get("Days")
                          if lock.get("ObjectLockEnabled") == "Enabled" else None),
        object_lock_mode=lock.get("Rule", {}).get("DefaultRetention", {}).get("Mode"),
    )


def expiring_tiers(rules: list[dict]) -> list[str]:
    """The retention tiers an enabled lifecycle rule expires (a rule filtered on the tier tag with Expiration)."""
    found = []
    for rule in rules:
        if rule.get("Status") != "Enabled" or not rule.get("Expiration"):
            continue
        flt = rule.get("Filter", {})
        tags = [flt["Tag"]] if "Tag" in flt else flt.get("And", {}).get("Tags", [])
        found += [t["Value"] for t in tags if t.get("Key") == tiers.TAG_KEY]
    return found


def gather(r: Resolver, interval: timedelta, now: datetime, quota: int | None) -> st.StatusFacts:
    """Every fact ``dr.core.status.evaluate`` judges; what cannot be read is recorded in ``unchecked``."""
    f = st.StatusFacts(interval=interval, cluster=r.cluster)
    f.log_group = f"/talos-dr/{f.cluster}/snapshots"
    _snapshots(r, f)
    reported_quota = _cloudwatch(r, f, now)
    _node(r, f, quota or int(reported_quota or DEFAULT_QUOTA_BYTES))
    _bucket(r, f)
    return f


def print_report(checks: list[st.Check], f: st.StatusFacts, now: datetime, out: TextIO) -> None:
    rpo = st.rpo_seconds(f, now)
    lost = f"{timefmt.human_age(rpo)} of changes" if rpo is not None else "everything (no snapshot anywhere)"
    print(f"talos-dr status of {f.cluster} at {timefmt.iso_utc(now)}: losing the node now loses {lost}", file=out)
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{c.state:<9} {c.name:<{width}}  {c.summary}", file=out)
        if c.fix and c.state != st.OK:
            print(f"{'':<9} {'':<{width}}  fix: {c.fix}", file=out)


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(PROG, "What would be lost now and what will break: one line per check, OK / WARN / FAIL, and the "
                         "command that fixes each one that is not OK.", examples=(
        f"{PROG}                    # the stack's bucket, CloudWatch and node",
        f"{PROG} --json             # for scripts and monitoring",
        f"{PROG} --schedule 'rate(30 minutes)'",
    ))
    p.add_argument("--schedule", metavar="EXPR", default=None,
                   help=f"the stack's snapshotSchedule, for what counts as stale (default: {ENV_SCHEDULE}, else "
                        f"{DEFAULT_SCHEDULE})")
    p.add_argument("--etcd-quota", type=int, metavar="BYTES", default=None,
                   help="etcd's --quota-backend-bytes (default: what the scheduled runs report, else 2 GiB)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    add_common_flags(p)
    return p


def run(args: argparse.Namespace, out: TextIO, err: TextIO, clock: Callable[[], datetime]) -> int:
    """Run every check and print OK / WARN / FAIL; the exit code is the worst check's."""
    r = Resolver(args)
    expr = args.schedule or r.env.get(ENV_SCHEDULE) or DEFAULT_SCHEDULE
    try:
        interval = schedule_interval(expr)
    except ValueError as exc:
        raise ConfigError(str(exc), "pass --schedule as the stack sets snapshotSchedule, e.g. 'rate(1 hour)'") from None
    if args.etcd_quota is not None and args.etcd_quota <= 0:
        raise ConfigError(f"--etcd-quota must be positive, not {args.etcd_quota}", "pass e.g. 2147483648")
    when = clock()
    facts = gather(r, interval, when, args.etcd_quota)
    checks = st.evaluate(facts, when)
    code = st.exit_code(checks)
    if args.json:
        rpo = st.rpo_seconds(facts, when)
        print(json.dumps({"ok": int(code) == 0, "exit_code": int(code), "cluster": facts.cluster,
                          "at": timefmt.iso_utc(when), "worst": st.worst(checks), "rpo_seconds": rpo,
                          "checks": [c.to_dict() for c in checks]}, indent=2), file=out)
    else:
        print_report(checks, facts, when, out)
    return int(code)


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
         now: Callable[[], datetime] | None = None) -> int:
    args = build_parser().parse_args(argv)
    clock = now or (lambda: datetime.now(UTC))
    return cli.execute(PROG, args, lambda o, e: run(args, o, e, clock), out=out, err=err)
