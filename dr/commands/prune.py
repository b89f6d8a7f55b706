"""`talos-dr prune`: apply the retention policy now, to local snapshots and (with ``--s3``) to the bucket's.

    talos-dr prune                       # local: .talos/snapshots and its downloads, older than 7 days, newest kept
    talos-dr prune --s3 --dry-run        # what would go from the bucket, and why
    talos-dr prune --s3                  # ... then asks you to type `delete`

Local files follow dr.backup's rule (``--keep-days``; the newest in each folder always stays; ``pre-restore-*``
safety snapshots and files with other names are never touched). In S3 each snapshot goes when it is older than its
tier's days (the ``retention`` tag dr.backup and the Lambda set) or, untagged, older than ``--keep-days``. The tier
days are the stack's (output ``snapshotRetentionDays``), or else what the bucket's lifecycle rules say; with neither,
``--s3`` refuses to guess (a guess too short deletes snapshots the stack meant to keep). Never deleted: the newest
snapshot (by evidence, as ``restore latest`` picks it: ``dr.adapters.store.newest``), the pinned ``latest`` copy,
safety snapshots, and any object this tool did not write (no ``source`` metadata of ours: e.g. talos-backup's).

Who may delete: the bucket policy denies deletes to everyone but the break-glass ``snapshotDeleter`` (docs/VAULT.md);
the lifecycle rules expire each tier on their own, and the dry run says roughly when. Run ``prune --s3`` without
``--dry-run`` as that role, when it is configured and something must go now.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO

from botocore.exceptions import BotoCoreError, ClientError

from dr.adapters import s3
from dr.adapters.store import Entry, newest
from dr.commands import cli
from dr.commands.backup import prune_local, pruning_clock
from dr.commands.settings import Resolver, add_common_flags
from dr.core import outputs as keys
from dr.core import spelling, tiers
from dr.core.errors import AccessDenied, ConfigError, NotConfirmed, SnapshotNotFound
from dr.core.retention import Policy, apply_policy

PROG = spelling.command("prune")
OURS = ("dr.backup", "schedule", "dr.restore")  # the `source` metadata our writers set


@dataclass(frozen=True)
class S3Decision:
    key: str
    taken_at: str
    tier: str | None
    delete: bool
    reason: str


def decide_s3(entries: list[Entry], keep_days: float, now: datetime,
              days: dict[str, int] | None = None, newest_key: str | None = None) -> list[S3Decision]:
    """Pure: which described S3 entries to delete, newest first (see the module docstring for the rules). Our own
    snapshots go through dr.core.retention's policy, ordered by S3's LastModified (what S3 says was uploaded last,
    not what a possibly wrong clock named it): the newest few always stay, future-dated ones are kept and reported.
    ``newest_key`` is the snapshot ``restore latest`` would pick: always kept too."""
    days = dict(days or tiers.DEFAULT_DAYS)
    by_upload = sorted(entries, key=lambda e: (e.modified, e.name.name), reverse=True)
    ours = [e for e in by_upload if not e.name.safety and e.source in OURS]
    limits = {e.name.name: float(days.get(e.tier or "", keep_days)) for e in ours}
    policy = {d.name: d for d in apply_policy([(e.name.name, e.name.taken_at) for e in ours], Policy(keep_days), now,
                                              order=[e.name.name for e in ours], limits=limits)}
    out: list[S3Decision] = []
    for e in by_upload:
        assert e.key is not None
        when = e.name.taken_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        if e.name.safety:
            out.append(S3Decision(e.key, when, e.tier, False, "safety snapshot (never pruned)"))
        elif e.key == newest_key:
            out.append(S3Decision(e.key, when, e.tier, False, "newest snapshot (always kept)"))
        elif e.source not in OURS:
            out.append(S3Decision(e.key, when, e.tier, False, "not written by talos-dr (never deleted)"))
        else:
            d = policy[e.name.name]
            tier = f" ({e.tier or 'untagged'})" if d.reason.startswith(("younger", "older")) else ""
            reason = d.reason + tier
            if d.keep and e.tier in days:
                reason += f"; lifecycle expires it about {lifecycle_expiry(e.modified, days[e.tier]):%Y-%m-%d}"
            out.append(S3Decision(e.key, when, e.tier, not d.keep, reason))
    return out


def lifecycle_expiry(stored: datetime, days: int) -> datetime:
    """When a lifecycle Expiration of ``days`` acts on an object S3 stored at ``stored``: days after creation, rounded
    up to the next midnight UTC (S3 User Guide, lifecycle-expire-general-considerations)."""
    t = stored.astimezone(UTC) + timedelta(days=days)
    midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight if midnight == t else midnight + timedelta(days=1)


def tier_days_from_lifecycle(rules: list[dict]) -> dict[str, int]:
    """Pure: tier -> Expiration days from a GetBucketLifecycleConfiguration answer's Rules (enabled rules whose filter
    names one ``retention`` tag, infra/bucket.py lifecycle_rules)."""
    days: dict[str, int] = {}
    for rule in rules:
        if rule.get("Status") != "Enabled" or "Days" not in (rule.get("Expiration") or {}):
            continue
        f = rule.get("Filter") or {}
        tags = (f.get("And") or {}).get("Tags") or ([f["Tag"]] if "Tag" in f else [])
        for tag in tags:
            if tag.get("Key") == tiers.TAG_KEY and tag.get("Value") in tiers.TIERS:
                days[tag["Value"]] = int(rule["Expiration"]["Days"])
    return days


def stack_tier_days(r: Resolver, client, bucket: str, text: TextIO) -> dict[str, int]:
    """The tier days the bucket really applies: the stack's output, else its lifecycle rules; else refuse."""
    try:
        recorded = r.outputs.get(keys.SNAPSHOT_RETENTION_DAYS)
    except ConfigError:
        recorded = None
    if isinstance(recorded, dict) and set(recorded) >= set(tiers.TIERS):
        print(f"tier days from the stack (output {keys.SNAPSHOT_RETENTION_DAYS}): "
              + ", ".join(f"{t} {recorded[t]}" for t in tiers.TIERS), file=text)
        return {t: int(recorded[t]) for t in tiers.TIERS}
    try:
        rules = client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except (ClientError, BotoCoreError) as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code != "NoSuchLifecycleConfiguration":
            raise s3.translate(exc, "reading the lifecycle rules of", bucket) from exc
        rules = []
    days = tier_days_from_lifecycle(rules)
    if set(days) >= set(tiers.TIERS):
        print("tier days from the bucket's lifecycle rules: " + ", ".join(f"{t} {days[t]}" for t in tiers.TIERS),
              file=text)
        return days
    raise ConfigError(f"the retention days of s3://{bucket} are unknown: no stack output {keys.SNAPSHOT_RETENTION_DAYS} "
                      "and no lifecycle rule per tier", "run it with the stack's outputs (--stack, or `pulumi up` "
                      "first); prune never guesses what a bucket keeps")


def _confirm(n: int, where: str, yes: bool, stdin: TextIO, out: TextIO) -> None:
    if yes:
        return
    if not getattr(stdin, "isatty", lambda: False)():
        raise NotConfirmed(f"{n} objects would be deleted from {where} and there is no terminal to confirm it",
                           "look at `talos-dr prune --s3 --dry-run`, then pass --yes")
    print(f"Type `delete` to delete these {n} objects from {where} (anything else stops): ", end="", file=out,
          flush=True)
    if stdin.readline().strip() != "delete":
        raise NotConfirmed("nothing was deleted (not confirmed)", "run it again and type `delete`")


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(PROG, "Apply the retention policy now: local snapshots, and with --s3 the bucket's (typed "
                         "confirmation; only the break-glass snapshotDeleter may delete there).", examples=(
                             f"{PROG}                   # local snapshots older than 7 days",
                             f"{PROG} --s3 --dry-run    # what would be deleted from the bucket, and why",
                         ))
    p.add_argument("--keep-days", type=float, default=7.0, help="local (and untagged S3) snapshots older than this "
                                                                "go (default 7); the newest always stays")
    p.add_argument("--s3", action="store_true", help="also prune the bucket (by tier; asks you to type delete)")
    p.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing")
    p.add_argument("--yes", action="store_true", help="do not ask (needed without a terminal)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout (also on failure)")
    add_common_flags(p)
    return p


def run(args: argparse.Namespace, out: TextIO, err: TextIO, doc: dict, stdin: TextIO,
        clock: Callable[[], datetime]) -> int:
    """Apply the retention policy, recording the plan in ``doc`` (``--json`` prints it, also on failure)."""
    text = err if args.json else out
    if args.keep_days < 0:
        raise ConfigError(f"--keep-days must be 0 or more, not {args.keep_days:g}", "pass e.g. --keep-days 7")
    r = Resolver(args)
    if args.dry_run:
        print("dry run: nothing is deleted", file=text)
    else:
        now = pruning_clock(r, clock(), text, ask_s3=args.s3)
        removed = prune_local(r.snapshots_dir, args.keep_days, now, text) if r.snapshots_dir.is_dir() else []
        doc["local"] = [str(x) for x in removed]
    if args.s3:
        store = r.s3_store()
        days = stack_tier_days(r, store.client, store.bucket, text)
        entries = [store.describe(e) for e in store.list()]
        now_s3 = pruning_clock(r, clock(), text, ask_s3=True)
        try:
            keep = newest(store, now=now_s3).key
        except SnapshotNotFound:
            keep = None
        decisions = decide_s3(entries, args.keep_days, now_s3, days, newest_key=keep)
        doc["s3"] = [asdict(d) for d in decisions]
        doomed = [d for d in decisions if d.delete]
        for d in decisions:
            print(f"  {'delete' if d.delete else 'keep  '}  {cli.printable(d.key)}  ({d.reason})", file=text)
        if doomed and not args.dry_run:
            _confirm(len(doomed), store.where, args.yes, stdin, text)
            for d in doomed:
                try:
                    store.client.delete_object(Bucket=store.bucket, Key=d.key)
                except (ClientError, BotoCoreError) as exc:
                    err_ = s3.translate(exc, "deleting", store.bucket, d.key)
                    if isinstance(err_, AccessDenied):
                        raise AccessDenied(f"{err_.message}: the bucket policy lets only the break-glass "
                                           "snapshotDeleter delete", "the lifecycle rules expire these on their "
                                           "own (the dry run says when); to delete now, run it as the role in "
                                           "`pulumi config get snapshotDeleter` (docs/VAULT.md)") from exc
                    raise err_ from exc
            print(f"deleted {len(doomed)} objects from {store.where} (a versioned bucket keeps them as "
                  "noncurrent versions until its lifecycle rule expires them)", file=text)
        elif not doomed:
            print(f"nothing to delete in {store.where}", file=text)
    doc["ok"] = True
    if args.json:
        print(json.dumps(doc, indent=2), file=out)
    return 0


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
         stdin: TextIO | None = None, now: Callable[[], datetime] | None = None) -> int:
    args = build_parser().parse_args(argv)
    clock = now or (lambda: datetime.now(UTC))
    doc: dict = {"ok": False, "local": [], "s3": []}
    # With --json a failure prints the plan so far with the error and its code.
    return cli.execute(PROG, args, lambda o, e: run(args, o, e, doc, stdin or sys.stdin, clock), out=out, err=err,
                       extra=lambda: doc)
