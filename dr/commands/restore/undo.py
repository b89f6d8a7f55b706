"""What a restore will undo, for the prompt: a diff from the snapshot to the node's current data.

A fresh snapshot is taken from the node through the Talos API (as `talos-dr diff SNAPSHOT live` does), read next to
the chosen snapshot, and compared object by object (dr.core.inventory.diff). Created since the snapshot: lost;
deleted since: they come back; changed since: they go back to the snapshot's version. When the node cannot give a
snapshot, the prompt says so instead; this never stops the restore by itself (the node may be broken: that is why
one restores).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TextIO

from dr.adapters.snapshot_reader import SnapshotReader
from dr.commands import source
from dr.commands.settings import Resolver
from dr.core import inventory, spelling
from dr.core.errors import DRError
from dr.core.node_state import ETCD_RUNNING

NAMESPACES_SHOWN = 8
LIVE_STALL = 10.0  # no byte from the node for this long: say "unknown" rather than keep a 3 a.m. prompt waiting


def summary_lines(d: inventory.Diff) -> list[str]:
    lost, back, reverted = (d.count(k) for k in (inventory.CREATED, inventory.DELETED, inventory.CHANGED))
    if not d.changes:
        return ["  undoes    nothing: the node holds the same Kubernetes objects as the snapshot"]
    lines = [f"  undoes    {lost} objects created since the snapshot are LOST, {back} deleted since come BACK, "
             f"{reverted} changed since go back to the snapshot's version:",
             f"            {'namespace':<28} {'lost':>6} {'back':>6} {'reverted':>9}"]
    by_ns = list(d.by_namespace().items())
    for ns, n in by_ns[:NAMESPACES_SHOWN]:
        lines.append(f"            {ns:<28} {n[inventory.CREATED]:>6} {n[inventory.DELETED]:>6} "
                     f"{n[inventory.CHANGED]:>9}")
    if len(by_ns) > NAMESPACES_SHOWN:
        lines.append(f"            ... and {len(by_ns) - NAMESPACES_SHOWN} more namespaces (`talos-dr diff SNAPSHOT "
                     "live --details` lists every object)")
    return lines


def what_it_undoes(r: Resolver, fetched: source.Fetched, err: TextIO, node_kind: str = ETCD_RUNNING,
                   base: Path | None = None) -> list[str]:
    """The prompt's "undoes" lines; a line saying why not when the node's current data cannot be read (etcd not
    running there: no snapshot can be taken, so none is asked for)."""
    from dr.commands.show import take_live

    if node_kind != ETCD_RUNNING:
        return [f"  undoes    unknown: etcd on the node is not running ({node_kind}), so its current data cannot be "
                "read to compare; whatever was written since the snapshot is lost"]
    folder = Path(tempfile.mkdtemp(prefix="dr-restore-undo-", dir=base))
    try:
        live_path, _digest = take_live(r, folder, err, stall=LIVE_STALL, prog=spelling.command("restore"))
        with SnapshotReader(fetched.path, label=fetched.origin) as snap, \
                SnapshotReader(live_path, label=f"the live snapshot of node {r.node}") as live:
            from dr.commands.show import digests

            return summary_lines(inventory.diff(digests(snap), digests(live)))
    except (DRError, OSError) as exc:
        return [f"  undoes    unknown: the node's current data could not be read to compare ({exc}); whatever was "
                "written since the snapshot is lost"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
