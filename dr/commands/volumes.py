"""`python -m dr.volumes`: the newest EBS snapshots of each data volume (taken by the stack's DLM policy), newest first.

    python -m dr.volumes                 # the newest snapshot of each data volume
    python -m dr.volumes --per-volume 7  # the newest seven of each
    python -m dr.volumes --json

The snapshots are found by the tag the DLM policy copies from the volumes, ``talos-dr/data-volume = <stack>/<cluster>``
(EC2 DescribeSnapshots, owner self). The cluster and region come from the stack's outputs (``--stack``,
``--outputs-file``) unless ``--cluster`` and ``--region`` say them. Finding none exits 4 (NOT_FOUND). ``dr.list`` shows
the same rows under its etcd table through ``volume_snapshot_rows`` and ``render_rows``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from dr.adapters import ec2
from dr.adapters.stack_outputs import OUTPUTS_FILE_ENV, STACK_ENV, resolve_outputs
from dr.commands import cli
from dr.core import outputs as keys
from dr.core import spelling, timefmt
from dr.core.errors import ConfigError, SnapshotNotFound
from dr.core.volume_snapshots import VolumeSnapshot, data_volume_tag_value, newest_per_volume

PROG = spelling.command("volumes")


def volume_snapshot_rows(client, stack: str, cluster: str, per_volume: int = 1) -> list[VolumeSnapshot]:
    """The ``per_volume`` newest snapshots of each of the stack's data volumes (what dr.list can show too)."""
    return newest_per_volume(ec2.data_volume_snapshots(client, data_volume_tag_value(stack, cluster)), per_volume)


def _labels(rows: list[VolumeSnapshot]) -> list[str]:
    """Each row's volume as a person tells it apart: its name (``data``), or, where several nodes each have a volume
    of that name, its ``Name`` tag (``prod-data``, ``prod-data-1``, ``prod-data-2``)."""
    tags: dict[str, set[str]] = {}
    for s in rows:
        tags.setdefault(s.volume_name, set()).add(s.name_tag)
    return [s.name_tag if len(tags[s.volume_name]) > 1 and s.name_tag else s.volume_name for s in rows]


def render_rows(rows: list[VolumeSnapshot], now: datetime) -> list[str]:
    """The table: volume, snapshot id, state, size, age, whether DLM took it."""
    labels = _labels(rows)
    w = max([16, *(len(x) for x in labels)])
    lines = [f"{'VOLUME':<{w}} {'SNAPSHOT':<24} {'STATE':<10} {'SIZE':>7} {'AGE':>7}  {'TAKEN AT':<20}  BY"]
    for s, label in zip(rows, labels, strict=True):
        age = timefmt.human_age((now - s.started).total_seconds())
        lines.append(f"{label:<{w}} {s.snapshot_id:<24} {s.state:<10} {s.size_gib:>4} GiB {age:>7}  "
                     f"{timefmt.iso_utc(s.started):<20}  {'dlm' if s.by_dlm else 'other'}")
    return lines


def _row_json(s: VolumeSnapshot) -> dict[str, Any]:
    return {"volume": s.volume_name, "name_tag": s.name_tag, "volume_id": s.volume_id, "snapshot_id": s.snapshot_id,
            "state": s.state, "size_gib": s.size_gib, "started": timefmt.iso_utc(s.started), "by_dlm": s.by_dlm}


def _target(args: argparse.Namespace) -> tuple[str, str, str | None]:
    """(stack, cluster, region): flags first, then the stack's outputs."""
    stack = args.stack or os.environ.get(STACK_ENV) or keys.DEFAULT_STACK
    cluster, region = args.cluster, args.region
    if not cluster or not region:
        outs = resolve_outputs(args.outputs_file, stack)
        cluster = cluster or outs.require(keys.CLUSTER_NAME, "to find the data volumes' snapshots")
        region = region or outs.get(keys.AWS_REGION)
    return stack, str(cluster), region


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(PROG, "List the newest EBS snapshots of each data volume (the stack's DLM policy takes them).")
    p.add_argument("--per-volume", type=int, default=1, metavar="N", help="the newest N of each volume (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("--cluster", help=f"cluster name (default: stack output {keys.CLUSTER_NAME})")
    p.add_argument("--region", help=f"AWS region (default: stack output {keys.AWS_REGION}, then AWS_REGION)")
    p.add_argument("--stack", help=f"Pulumi stack (env {STACK_ENV}; default {keys.DEFAULT_STACK})")
    p.add_argument("--outputs-file", help=f"`pulumi stack output --json --show-secrets` file instead of the "
                                          f"Automation API (env {OUTPUTS_FILE_ENV})")
    return p


def run(args: argparse.Namespace, out: TextIO, err: TextIO, clock: Callable[[], datetime]) -> int:
    """Print the newest EBS snapshots of each data volume."""
    if args.per_volume < 1:
        raise ConfigError(f"--per-volume must be 1 or more, not {args.per_volume}", "pass e.g. --per-volume 7")
    stack, cluster, region = _target(args)
    rows = volume_snapshot_rows(ec2.make_client(region), stack, cluster, args.per_volume)
    if args.json:
        print(json.dumps({"stack": stack, "cluster": cluster, "snapshots": [_row_json(s) for s in rows]},
                         indent=2), file=out)
    if not rows:
        raise SnapshotNotFound(f"no EBS snapshots of the data volumes of {stack}/{cluster}",
                               "the DLM policy takes the first within a day of `pulumi up` "
                               "(dataVolumeSnapshotSchedule); check the region and the stack")
    if not args.json:
        print(f"Newest EBS snapshots of the data volumes of {stack}/{cluster}:", file=out)
        for line in render_rows(rows, clock()):
            print(line, file=out)
    return 0


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None,
         now: Callable[[], datetime] | None = None) -> int:
    args = build_parser().parse_args(argv)
    clock = now or (lambda: datetime.now(UTC))
    return cli.execute(PROG, args, lambda o, e: run(args, o, e, clock), out=out, err=err, json_out=False)
