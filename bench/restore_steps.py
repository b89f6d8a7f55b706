"""``python -m bench.restore_steps [--sizes 10M,100M] [--results bench/RESULTS.md]``: how long a restore takes, step by
step, beside the bare talosctl sequence.

One sandbox (single node), etcd grown to each size in turn; at each size ``talos-dr backup --save-to-s3`` makes the
object, then the bare sequence (reset, wait, ``bootstrap --recover-from`` retried while the node is not ready, health:
``bench.__main__.bare_restore``) restores its local copy, then ``talos-dr restore s3://... --yes`` restores the object.
The restore's steps are timed from its own output lines as they arrive (each line stamped on arrival): download
(and decode), checks (trailer, etcd's own status, the node probe, up to the reset), reset, wait (the node coming back),
upload (``bootstrap --recover-from`` until accepted), recovery (until etcd runs from the snapshot), health (until it
reports the restore complete). *Down* is from the confirmation to healthy: what the cluster is without etcd.
The sandbox's node reboots in ``reboot_seconds`` and its talosctl is a local program: the wait and the node's own
work are the sandbox's, not AWS's (the real node's reboot and image pull take minutes).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import fill
from bench.__main__ import MIB, OUT, SIZES, bare_restore, etcdctl_shim, parse_sizes
from bench.results import load, publish

BEGIN = "<!-- BEGIN bench.restore_steps -->"
END = "<!-- END bench.restore_steps -->"
# (step, the line that ends it), in order
MARKS = [
    ("download", re.compile(r"decoded and verified into|^downloading ")),
    ("checks", re.compile(r"^resetting node ")),
    ("reset", re.compile(r"^waiting for node .* after the reset")),
    ("wait", re.compile(r"^bootstrapping etcd on node ")),
    ("upload", re.compile(r"^bootstrap accepted by node ")),
    ("recovery", re.compile(r"^etcd on node .* runs from the snapshot")),
    ("health", re.compile(r"^restore complete: ")),
]
CONFIRMED = re.compile(r"^confirmed by --yes")


def timed_lines(argv: list[str], env: dict, cwd: Path) -> tuple[int, list[tuple[float, str]], float]:
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = [(time.monotonic() - t0, line.rstrip("\n")) for line in proc.stdout]
    return proc.wait(), lines, time.monotonic() - t0


def steps_of(lines: list[tuple[float, str]]) -> dict[str, float]:
    """Each step's seconds: from the end of the one before (0 for the first) to the last line that ends it."""
    ends: dict[str, float] = {}
    for t, text in lines:
        for i, (name, pattern) in enumerate(MARKS):
            # the download's progress lines repeat: the last one counts, as long as no later step has begun
            if pattern.search(text) and all(m not in ends for m, _ in MARKS[i + 1 :]):
                ends[name] = t
    out, before = {}, 0.0
    for name, _ in MARKS:
        if name in ends:
            out[name] = ends[name] - before
            before = ends[name]
    confirmed = next((t for t, text in lines if CONFIRMED.search(text)), None)
    if confirmed is not None and "health" in ends:
        out["down"] = ends["health"] - confirmed
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.restore_steps", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=parse_sizes, default=["10M", "100M"])
    p.add_argument("--results", help="replace this bench's section of this Markdown file")
    args = p.parse_args(argv)

    from sandbox.api import Sandbox

    OUT.mkdir(parents=True, exist_ok=True)
    os.environ["SANDBOX_ETCDCTL_BIN"] = str(etcdctl_shim())
    load_before = load()
    sb = Sandbox.up(OUT / "sandbox-restore-steps", reboot_seconds=0.5, bootstrap_not_ready_seconds=0.3)
    rows = []
    try:
        env = {**os.environ, **sb.env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        env.pop("DR_TALOS_DIR", None)
        exe = str(Path(sys.executable).with_name("talos-dr"))
        work = OUT / "work-restore-steps"
        work.mkdir(parents=True, exist_ok=True)
        put, idx = 0, 0
        for label in sorted(args.sizes, key=lambda s: SIZES[s]):
            idx = fill.fill(sb.etcd_endpoint, SIZES[label] - put, idx)
            put = SIZES[label]
            backup_dir = work / f"backup-{label}"
            shutil.rmtree(backup_dir, ignore_errors=True)
            b = subprocess.run([exe, "backup", "--save-to-s3", "--talos-dir", str(backup_dir)], env=env, cwd=work,
                               capture_output=True, text=True)
            if b.returncode != 0:
                raise SystemExit(f"backup failed: {b.stderr[-2000:]}")
            uri = re.search(r"s3://\S+?\.db(?:\.zst)?(?=\s)", b.stdout + b.stderr)
            [local] = sorted((backup_dir / "snapshots").glob("etcd-snapshot-*.db"))
            snap = work / f"bare-{label}.db"
            shutil.copyfile(local, snap)
            shutil.rmtree(backup_dir)
            assert uri is not None, b.stdout + b.stderr
            bare = bare_restore(sb, env, work, snap, label)
            talos_dir = work / f"restore-{label}"
            shutil.rmtree(talos_dir, ignore_errors=True)
            code, lines, wall = timed_lines([exe, "restore", uri.group(0), "--yes", "--no-safety-snapshot",
                                             "--poll-interval", "500ms", "--talos-dir", str(talos_dir)], env, work)
            if code != 0:
                raise SystemExit("restore failed:\n" + "\n".join(text for _, text in lines[-20:]))
            steps = steps_of(lines)
            rows.append({"size_label": label, "snapshot_bytes": snap.stat().st_size, "steps": steps, "wall_s": wall,
                         "bare": bare})
            snap.unlink()
            shutil.rmtree(talos_dir, ignore_errors=True)
            print(f"[{label}] restore {wall:.2f}s: " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items())
                  + f"; bare {bare['wall_s']:.2f}s: " + ", ".join(f"{k} {v:.2f}" for k, v in bare["steps"].items()),
                  flush=True)
    finally:
        sb.down()
    load_after = load()
    data = {"rows": rows, "load_before": load_before, "load_after": load_after,
            "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "sizes": args.sizes}
    publish(data, OUT / "restore_steps.json", markdown(data), args.results, BEGIN, END)
    return 0


def markdown(data: dict) -> str:
    names = [n for n, _ in MARKS]
    lines = [BEGIN, "## Restore time, step by step: `python -m bench.restore_steps`", "",
             f"Measured {data['at']} with `python -m bench.restore_steps --sizes {','.join(data['sizes'])}` (single "
             f"node; load average {data['load_before']} before, {data['load_after']} after, on 2 shared cores). "
             "Each step is timed from `talos-dr restore`'s own output lines, stamped as they arrive; *down* is from "
             "the confirmation to healthy. The bare talosctl sequence restores the same snapshot from a local file. "
             "The sandbox node reboots in 0.5 s and its talosctl is a local program: on AWS the wait (a reboot, the "
             "etcd image pulled again after the EPHEMERAL wipe) and the node's recovery take minutes, and the upload "
             "goes over the network to the node. In the bare sequence the node's recovery falls inside its health step "
             "(talosctl health waits for etcd); `talos-dr restore` waits for etcd to run from the snapshot first, "
             "and its checks include reading the snapshot's own status and probing the node.", "",
             "| snapshot | " + " | ".join(f"{n} s" for n in names) + " | down s | whole command s | bare: reset + wait "
             "s | bare: bootstrap --recover-from s | bare: health s | bare total s |",
             "| --- | " + " | ".join("---" for _ in names) + " | --- | --- | --- | --- | --- | --- |"]
    for r in data["rows"]:
        s, b = r["steps"], r["bare"]["steps"]
        lines.append(f"| {r['size_label']} ({r['snapshot_bytes'] / MIB:.1f} MiB) | "
                     + " | ".join(f"{s[n]:.2f}" if n in s else "-" for n in names)
                     + f" | **{s.get('down', float('nan')):.2f}** | {r['wall_s']:.2f} | {b['reset+wait']:.2f} | "
                     f"{b['bootstrap --recover-from']:.2f} | {b['health']:.2f} | {r['bare']['wall_s']:.2f} |")
    lines += ["", END]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
