"""`talos-dr prune`: apply the retention policy now, to local snapshots and (with ``--s3``) to the bucket's.

    talos-dr prune                       # local: .talos/snapshots and its downloads, older than 7 days, newest kept
    talos-dr prune --s3 --dry-run        # what would go from the bucket, and why
    talos-dr prune --s3                  # ... then asks you to type `delete`

Local files follow dr.backup's rule (``--keep-days``; the newest in each folder always stays; ``pre-restore-*``
safety snapshots and files with other names are never touched). In S3 each snapshot goes when it is older than its
tier's days (the ``retention`` tag dr.backup and the Lambda set: hourly 2, daily 14, weekly 56, monthly 365 by
default, as the bucket's lifecycle rules do) or, untagged, older than ``--keep-days``. Never deleted: the newest
snapshot, the pinned ``latest`` copy, safety snapshots, and any object this tool did not write (no ``source``
metadata of ours: e.g. talos-backup's). The bucket's lifecycle rules do this on their own; ``prune --s3`` is for a
principal with ``s3:DeleteObject`` who wants it now (the backup roles have no delete rights).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TextIO, cast

from botocore.exceptions import BotoCoreError, ClientError

from dr.adapters import s3
from dr.adapters.store import Entry
from dr.commands import cli
from dr.commands.backup import prune_local, pruning_clock
from dr.commands.settings import Resolver, add_common_flags
from dr.core import tiers
from dr.core.errors import ConfigError, NotConfirmed
from dr.core.retention import Policy, apply_policy

PROG = "dr.prune"
OURS = ("dr.backup", "schedule", "dr.restore")  # the `source` metadata our writers set


@dataclass(frozen=True)
class S3Decision:
    key: str
    taken_at: str
    tier: str | None
    delete: bool
    reason: str


def decide_s3(entries: list[Entry], keep_days: float, now: datetime,
              days: dict[str, int] | None = None) -> list[S3Decision]:
    """Pure: which described S3 entries to delete, newest first (see the module docstring for the rules). Our own
    snapshots go through dr.core.retention's policy, ordered by S3's LastModified (what S3 says was uploaded last,
    not what a possibly wrong clock named it): the newest few always stay, future-dated ones are kept and reported."""
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
        elif e.source not in OURS:
            out.append(S3Decision(e.key, when, e.tier, False, "not written by talos-dr (never deleted)"))
        else:
            d = policy[e.name.name]
            tier = f" ({e.tier or 'untagged'})" if d.reason.startswith(("younger", "older")) else ""
            out.append(S3Decision(e.key, when, e.tier, not d.keep, d.reason + tier))
    return out


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


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
         stdin: TextIO | None = None, now: Callable[[], datetime] | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    stdin = stdin or sys.stdin
    clock = now or (lambda: datetime.now(UTC))
    p = cli.parser(PROG, "Apply the retention policy now: local snapshots, and with --s3 the bucket's (typed "
                         "confirmation; needs s3:DeleteObject).", examples=(
                             "python -m dr.prune                   # local snapshots older than 7 days",
                             "python -m dr.prune --s3 --dry-run    # what would be deleted from the bucket, and why",
                         ))
    p.add_argument("--keep-days", type=float, default=7.0, help="local (and untagged S3) snapshots older than this "
                                                                "go (default 7); the newest always stays")
    p.add_argument("--s3", action="store_true", help="also prune the bucket (by tier; asks you to type delete)")
    p.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing")
    p.add_argument("--yes", action="store_true", help="do not ask (needed without a terminal)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout (also on failure)")
    add_common_flags(p)
    args = p.parse_args(argv)
    doc: dict = {"ok": False, "local": [], "s3": []}
    # With --json a failure prints the plan so far with the error and its code (cli.run, json_out).
    tracked = cli.Tracked(out, extra=lambda: doc) if args.json else None
    text = err if args.json else out
    out = cast(TextIO, tracked) if tracked is not None else out

    def body() -> int:
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
            entries = [store.describe(e) for e in store.list()]
            decisions = decide_s3(entries, args.keep_days, pruning_clock(r, clock(), text, ask_s3=True))
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
                        raise s3.translate(exc, "deleting", store.bucket, d.key) from exc
                print(f"deleted {len(doomed)} objects from {store.where} (a versioned bucket keeps them as "
                      "noncurrent versions until its lifecycle rule expires them)", file=text)
            elif not doomed:
                print(f"nothing to delete in {store.where}", file=text)
        doc["ok"] = True
        if args.json:
            print(json.dumps(doc, indent=2), file=out)
        return 0

    return cli.run(PROG, body, debug=args.debug, err=err, json_out=tracked)
