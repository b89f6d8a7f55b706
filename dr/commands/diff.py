"""`talos-dr diff A B`: Kubernetes objects created, deleted and changed from snapshot A to snapshot B.

    talos-dr diff latest~1 latest                     # what the newest snapshot changed
    talos-dr diff latest live                         # what happened since the newest snapshot (a restore undoes it)
    talos-dr diff latest live --namespace demo --details

A and B are resolved as verify and restore resolve a snapshot; ``live`` is a fresh snapshot from the node through
the Talos API, kept 0600 in a private folder only while the diff runs. Values are compared by SHA-256: an object is
changed when its stored bytes differ (an encrypted Secret that was rewritten counts as changed even if its data is
the same: the API server encrypts every write with a fresh nonce). Summary by type and namespace first;
``--details`` lists every object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TextIO

from dr.commands import cli
from dr.commands.settings import Resolver, add_common_flags
from dr.commands.show import Opened, add_filters, digests, opened, split_list
from dr.core import inventory, spelling
from dr.core.errors import ConfigError
from dr.core.timefmt import iso_utc

PROG = spelling.command("diff")
SIGNS = {inventory.CREATED: "+", inventory.DELETED: "-", inventory.CHANGED: "~"}


def describe(o: Opened) -> dict:
    return {"snapshot": o.origin, "taken_at": iso_utc(o.taken_at) if o.taken_at else None,
            "revision": o.reader.revision, "keys": len(o.reader.keys)}


def print_text(a: Opened, b: Opened, d: inventory.Diff, details: bool, out: TextIO) -> None:
    for label, o in (("from", a), ("to", b)):
        when = iso_utc(o.taken_at) if o.taken_at else "unknown"
        print(f"{label:<5} {o.origin} (taken {when}, revision {o.reader.revision})", file=out)
    c, dl, ch = d.count(inventory.CREATED), d.count(inventory.DELETED), d.count(inventory.CHANGED)
    print(f"\n{c} created, {dl} deleted, {ch} changed; {d.unchanged} unchanged", file=out)
    if not d.changes:
        print("no differences: the same objects with the same stored bytes", file=out)
        return
    print(f"\n  {'namespace':<32} {'type':<32} {'created':>8} {'deleted':>8} {'changed':>8}", file=out)
    for (t, ns), n in d.by_type_namespace().items():
        print(f"  {ns:<32} {t:<32} {n[inventory.CREATED]:>8} {n[inventory.DELETED]:>8} {n[inventory.CHANGED]:>8}",
              file=out)
    if details:
        print("", file=out)
        for change in sorted(d.changes, key=lambda x: (x.ref.ns, x.ref.type, x.ref.name)):
            print(f"  {SIGNS[change.kind]} {change.kind:<8} {change.ref}", file=out)
    else:
        print("\n(--details lists every object)", file=out)


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(PROG, "Kubernetes objects created, deleted and changed from snapshot A to snapshot B (or `live`: "
                         "a fresh snapshot from the node), by type and namespace; --details lists them.", examples=(
                             f"{PROG} latest~1 latest",
                             f"{PROG} latest live --details",
                             f"{PROG} latest live --namespace demo --type secrets --json",
                         ))
    p.add_argument("a", metavar="A", help="the older snapshot: a name `list` prints, a file, s3://, latest, latest~N, "
                                          "or `live`")
    p.add_argument("b", metavar="B", help="the newer snapshot (same forms)")
    add_filters(p)
    p.add_argument("--details", action="store_true", help="list every created, deleted and changed object")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout (also on failure)")
    add_common_flags(p)
    return p


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Print what changed from snapshot A to snapshot B."""
    if args.a == args.b:
        raise ConfigError(f"A and B are both {args.a!r}", "name two different snapshots, e.g. `talos-dr diff "
                                                          "latest live`")
    r = Resolver(args)
    namespaces = split_list(args.namespace)
    types = split_list(args.type)
    types = inventory.normalise_types(types) if types else None
    base = Path(args.tmp_dir) if args.tmp_dir else None
    with opened(args.a, r, err, base) as a, opened(args.b, r, err, base) as b:
        d = inventory.diff(digests(a.reader), digests(b.reader), namespaces=namespaces, types=types)
        if args.json:
            doc = {"ok": True, "from": describe(a), "to": describe(b),
                   "filters": {"namespace": sorted(namespaces or []), "type": sorted(types or [])},
                   **d.to_json(details=args.details)}
            print(json.dumps(doc, indent=2), file=out)
        else:
            print_text(a, b, d, args.details, out)
    return 0


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.execute(PROG, args, lambda o, e: run(args, o, e), out=out, err=err)
