"""``python -m bench.ha_restore_steps [--sizes 10M] [--results bench/RESULTS.md]``: how long a three-node restore
takes, step by step, from the confirmation to healthy; and, beside it, a one-member replacement (no restore).

One three-node sandbox (``python -m sandbox up --nodes 3``: three real etcd members on loopback, three simulated
Talos nodes), etcd grown to each size in turn. At each size: ``talos-dr backup --save-to-s3`` makes the object; nodes
2 and 3 are lost with their disks (the quorum is gone) and rebuilt as `pulumi up --refresh` would (new instances,
same private IPs, empty etcd waiting for a bootstrap); then ``talos-dr restore s3://... --yes`` runs, its output
lines stamped as they arrive. The steps are cut at the restore's own lines (``RESTORE_MARKS``): safety snapshot,
resets (EPHEMERAL wiped on every node that is up), the wait until every etcd waits for its bootstrap, the upload
(``bootstrap --recover-from`` on the one node, until accepted), recovery (until etcd runs from the snapshot), joins
(until the last node is a voting member), health. *Down* is from the confirmation to healthy. Then node 3 is lost
alone and ``talos-dr replace-member`` brings it back (the rebuild started when it says to run `pulumi up`), cut at
its lines (``REPLACE_MARKS``).

The sandbox's nodes reboot in ``reboot_seconds`` (0.5 s) and its talosctl is a local program: the waits and the
nodes' own work are the sandbox's, not AWS's (a real reboot, the etcd image pull after the wipe, an instance launch
take minutes). Figures, not assertions: nothing here is a timed test.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import fill
from bench.__main__ import MIB, OUT, SIZES, etcdctl_shim, parse_sizes
from bench.results import load, publish

BEGIN = "<!-- BEGIN bench.ha_restore_steps -->"
END = "<!-- END bench.ha_restore_steps -->"
CONFIRMED = re.compile(r"^confirmed by --yes")
# (step, the line that ends it), in order; a step's last matching line counts while no later step has begun.
RESTORE_MARKS = [
    ("safety snapshot", re.compile(r"^safety snapshot (kept at|also stored)|safety snapshot .* failed")),
    ("resets", re.compile(r"^resetting node ")),
    ("until all wait", re.compile(r"^bootstrap node: ")),
    ("upload", re.compile(r"^bootstrap accepted by node ")),
    ("recovery", re.compile(r"runs from the snapshot")),
    ("joins", re.compile(r"joined: a voting member")),
    ("health", re.compile(r"^restore complete: ")),
]
REPLACE_MARKS = [
    ("safety snapshot", re.compile(r"^safety snapshot (kept at|also stored)|safety snapshot .* failed")),
    ("remove member", re.compile(r"^removed: |no longer a member")),
    ("rebuild until learner", re.compile(r" joined as a learner \(etcd member ")),
    ("promotion", re.compile(r" is a voting member \(etcd member ")),
    ("healthy and Ready", re.compile(r"^member replacement complete: ")),
]
REBUILD_NOW = "Run this now, in another terminal"


def timed(argv: list[str], env: dict, cwd: Path, when: str | None = None,
          action: Callable[[], None] | None = None) -> tuple[int, list[tuple[float, str]], float]:
    """Run ``argv``, stamping each output line on arrival; ``action`` runs (in a thread, so the stamps stay honest)
    when a line contains ``when``."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines, worker = [], None
    for line in proc.stdout:
        lines.append((time.monotonic() - t0, line.rstrip("\n")))
        if when is not None and action is not None and worker is None and when in line:
            worker = threading.Thread(target=action)
            worker.start()
    code = proc.wait()
    if worker is not None:
        worker.join()
    return code, lines, time.monotonic() - t0


def steps_of(lines: list[tuple[float, str]], marks: list[tuple[str, re.Pattern[str]]]) -> dict[str, float]:
    """Each step's seconds, from the end of the one before (the confirmation for the first) to the last line that
    ends it; a step whose line never came is left out (and the next one counts from the last that did)."""
    ends: dict[str, float] = {}
    for t, text in lines:
        s = text.strip()
        for i, (name, pattern) in enumerate(marks):
            if pattern.search(s) and all(m not in ends for m, _ in marks[i + 1:]):
                ends[name] = t
    confirmed = next((t for t, text in lines if CONFIRMED.search(text)), 0.0)
    out, before = {}, confirmed
    for name, _ in marks:
        if name in ends:
            out[name] = ends[name] - before
            before = ends[name]
    last = marks[-1][0]
    if last in ends:
        out["down"] = ends[last] - confirmed
    return out


def one_size(sb, env: dict, exe: str, work: Path, label: str) -> dict:
    backup_dir = work / f"backup-{label}"
    shutil.rmtree(backup_dir, ignore_errors=True)
    b = subprocess.run([exe, "backup", "--save-to-s3", "--talos-dir", str(backup_dir)], env=env, cwd=work,
                       capture_output=True, text=True)
    if b.returncode != 0:
        raise SystemExit(f"backup failed: {b.stdout[-1000:]}{b.stderr[-2000:]}")
    uri = re.search(r"s3://\S+?\.db(?:\.zst)?(?=\s)", b.stdout + b.stderr)
    assert uri is not None, b.stdout + b.stderr
    [local] = sorted((backup_dir / "snapshots").glob("etcd-snapshot-*.db"))
    size = local.stat().st_size
    shutil.rmtree(backup_dir)
    for i in (2, 3):
        sb.lose(i, disk=True)
    for i in (2, 3):
        sb.replace_instance(i)
    talos_dir = work / f"restore-{label}"
    shutil.rmtree(talos_dir, ignore_errors=True)
    code, lines, wall = timed([exe, "restore", uri.group(0), "--yes", "--poll-interval", "500ms", "--talos-dir",
                               str(talos_dir)], env, work)
    if code != 0:
        raise SystemExit("restore failed:\n" + "\n".join(text for _, text in lines[-30:]))
    restore = steps_of(lines, RESTORE_MARKS)
    sb.wait_voters(3, timeout=120)
    sb.lose(3, disk=True)
    code, rlines, rwall = timed([exe, "replace-member", sb.members[2].private_ip, "--yes", "--poll-interval", "500ms",
                                 "--talos-dir", str(talos_dir)], env, work, REBUILD_NOW,
                                lambda: sb.replace_instance(3))
    if code != 0:
        raise SystemExit("replace-member failed:\n" + "\n".join(text for _, text in rlines[-30:]))
    replace = steps_of(rlines, REPLACE_MARKS)
    shutil.rmtree(talos_dir, ignore_errors=True)
    return {"size_label": label, "snapshot_bytes": size, "restore": restore, "restore_wall_s": wall,
            "replace": replace, "replace_wall_s": rwall,
            "restore_lines": [f"{t:7.2f}  {x}" for t, x in lines], "replace_lines": [f"{t:7.2f}  {x}" for t, x in rlines]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ha_restore_steps", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=parse_sizes, default=["10M"])
    p.add_argument("--results", help="replace this bench's section of this Markdown file")
    args = p.parse_args(argv)

    from sandbox.api import Sandbox

    OUT.mkdir(parents=True, exist_ok=True)
    os.environ["SANDBOX_ETCDCTL_BIN"] = str(etcdctl_shim())
    load_before = load()
    folder = OUT / "sandbox-ha-restore-steps"
    shutil.rmtree(folder, ignore_errors=True)
    sb = Sandbox.up(folder, nodes=3, reboot_seconds=0.5, bootstrap_not_ready_seconds=0.3)
    rows = []
    try:
        env = {**os.environ, **sb.env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        env.pop("DR_TALOS_DIR", None)
        exe = str(Path(sys.executable).with_name("talos-dr"))
        work = OUT / "work-ha-restore-steps"
        work.mkdir(parents=True, exist_ok=True)
        put, idx = 0, 0
        for label in args.sizes:
            sb.wait_voters(3, timeout=120)
            idx = fill.fill(sb._answering(), SIZES[label] - put, idx)
            put = SIZES[label]
            row = one_size(sb, env, exe, work, label)
            rows.append(row)
            print(f"[{label}] restore {row['restore_wall_s']:.2f}s: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in row["restore"].items())
                  + f"; replace-member {row['replace_wall_s']:.2f}s: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in row["replace"].items()), flush=True)
    finally:
        sb.down()
    load_after = load()
    data = {"rows": rows, "load_before": load_before, "load_after": load_after,
            "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "sizes": args.sizes}
    publish(data, OUT / "ha_restore_steps.json", markdown(data), args.results, BEGIN, END)
    return 0


def _table(rows: list[dict], key: str, marks: list[tuple[str, re.Pattern[str]]], total: str) -> list[str]:
    names = [n for n, _ in marks]
    out = ["| snapshot | " + " | ".join(f"{n} s" for n in names) + f" | **{total} s** | whole command s |",
           "| --- | " + " | ".join("---" for _ in names) + " | --- | --- |"]
    for r in rows:
        s = r[key]
        out.append(f"| {r['size_label']} ({r['snapshot_bytes'] / MIB:.1f} MiB) | "
                   + " | ".join(f"{s[n]:.2f}" if n in s else "-" for n in names)
                   + f" | **{s.get('down', float('nan')):.2f}** | {r[key + '_wall_s']:.2f} |")
    return out


def markdown(data: dict) -> str:
    lines = [BEGIN, "## Three nodes: restore and member replacement, step by step: `python -m bench.ha_restore_steps`",
             "", f"Measured {data['at']} with `python -m bench.ha_restore_steps --sizes {','.join(data['sizes'])}` "
             f"(three-node sandbox; load average {data['load_before']} before, {data['load_after']} after, on 2 shared "
             "cores). Each step is timed from the command's own output lines, stamped as they arrive, from the "
             "end of the step before (the first from the confirmation); *down* is from the confirmation to healthy. "
             "The sandbox's nodes reboot in 0.5 s and its talosctl is a local program: on AWS the waits (reboots, "
             "the etcd image pulled again after the EPHEMERAL wipe, an instance launched by `pulumi up`) take "
             "minutes. Before the confirmation (in *whole command*, not in *down*) the restore proves the snapshot "
             "and waits until the rebuilt nodes' etcd has been in `Preparing` long enough to mean \"waiting for a "
             "bootstrap\" (30 s: the restore's own rule for a node it did not reset). A `-` is a step whose line "
             "never came: the sandbox joins and promotes a rebuilt member between two looks, so the replacement's "
             "*promotion* holds its rebuild and join.", "",
             "Quorum lost (two of three nodes and their disks), `talos-dr restore s3://... --yes`:",
             "", *_table(data["rows"], "restore", RESTORE_MARKS, "down"), "",
             "One member lost (node 3 and its disk), `talos-dr replace-member NODE --yes`, the rebuild started when "
             "it asks for `pulumi up --refresh` (no restore: the cluster keeps answering throughout, so the last column is "
             "the confirmation to the end, not downtime):", "",
             *_table(data["rows"], "replace", REPLACE_MARKS, "confirmation to done"), "", END]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
