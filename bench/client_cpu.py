"""``python -m bench.client_cpu [--size 256M] [--reps 3] [--apid go] [--profile] [--label after] [--results FILE]``

The client's own cost: CPU-seconds (user + system) per GiB of ``talos-dr backup --save-to-s3`` (plain, zstd,
zstd+age) against the sandbox's apid, by default the grpc-go stand-in (sandbox/goapid/: one DATA frame per 1 KiB
message, as a real apid sends). CPU time, not wall time: the machine may be shared, and CPU-seconds of one process
are what a Lambda's vCPU share or a laptop pays, whatever else runs. Each run is a fresh ``talos-dr`` process; its
CPU is ``getrusage(RUSAGE_CHILDREN)`` taken around it (the process and anything it waited for). ``--profile`` adds one
plain run under cProfile and prints where the time goes.

Figures go to bench/out/client_cpu-<label>.json; ``--results`` replaces this bench's section of the file with a table
of every label measured so far (e.g. ``before`` and ``after`` a change to the client).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import fill
from bench.__main__ import MIB, OUT, clean_bucket, etcdctl_shim
from bench.results import load, write_section

BEGIN = "<!-- BEGIN bench.client_cpu -->"
END = "<!-- END bench.client_cpu -->"
VARIANTS = {"plain": ["--no-compress"], "zstd": [], "zstd_age": [], "lambda": []}
# The Lambda's path: snapshot_lambda.handler.take_snapshot (no `nodes` metadata, zstd), via bench.backup_onepass.
LAMBDA_MAIN = "import sys; from bench.backup_onepass import lambda_main; sys.exit(lambda_main())"
LAMBDA_BUDGET_S = 840.0  # snapshot_lambda/handler.py's default TALOS_DR_TIMEOUT (Lambda's own limit is 900 s)
LAMBDA_MB_PER_VCPU = 1769  # "At 1,769 MB, a function has the equivalent of one vCPU" (AWS Lambda Developer Guide,
# https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html)
QUOTA = 2 * 1024 * MIB  # etcd's default backend quota (--quota-backend-bytes), the largest database a node keeps
GIB = 1024 * MIB


def parse_size(text: str) -> int:
    units = {"K": 1024, "M": MIB, "G": GIB}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


class CpuLimit:
    """A cgroup v1 ``cpu`` child with a CFS quota of ``share`` CPUs (what Lambda gives a function of that memory),
    for the Lambda path's process: made here, removed by ``close``. None of it when the controller is not writable."""

    ROOT = Path("/sys/fs/cgroup/cpu")

    def __init__(self, share: float):
        self.share = share
        self.dir = self.ROOT / f"talos-dr-bench-{os.getpid()}"
        self.dir.mkdir()
        period = int((self.dir / "cpu.cfs_period_us").read_text())
        (self.dir / "cpu.cfs_quota_us").write_text(str(int(period * share)))

    def enter(self) -> None:  # in the child, before exec
        (self.dir / "cgroup.procs").write_text(str(os.getpid()))

    def close(self) -> None:
        self.dir.rmdir()


def run_backup(env: dict, variant: str, talos_dir: Path, sb=None,
               limit: CpuLimit | None = None) -> tuple[float, float, int]:
    """(CPU-seconds, wall seconds, snapshot bytes) of one ``talos-dr backup --save-to-s3`` process (``lambda``: one
    process running the Lambda's ``take_snapshot``; its size is the stored object's source, read from its JSON)."""
    if talos_dir.exists():
        shutil.rmtree(talos_dir)
    exe = Path(sys.executable).with_name("talos-dr")
    if variant == "lambda":
        argv = [sys.executable, "-c", LAMBDA_MAIN, str(sb.talosconfig), sb.public_ip, str(sb.info.apid_port),
                sb.bucket or "", sb.cluster_name]
    else:
        argv = [str(exe), "backup", "--save-to-s3", *VARIANTS[variant], "--talos-dir", str(talos_dir)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True,
                          preexec_fn=limit.enter if limit and variant == "lambda" else None)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if variant == "lambda":
        return cpu, wall, int(json.loads(proc.stdout.strip().splitlines()[-1])["size"])
    [snap] = sorted((talos_dir / "snapshots").glob("etcd-snapshot-*.db"))
    size = snap.stat().st_size
    shutil.rmtree(talos_dir)
    return cpu, wall, size


def profile_backup(env: dict, talos_dir: Path, out: Path, top: int = 25) -> str:
    """One plain backup under cProfile, in a fresh process; returns the top entries by own time."""
    if talos_dir.exists():
        shutil.rmtree(talos_dir)
    # CPU time as the profiler's clock (its default is wall time, which counts waiting on S3 and on the node)
    code = "\n".join([
        "import cProfile, sys, time",
        f"sys.argv = ['talos-dr', 'backup', '--save-to-s3', '--no-compress', '--talos-dir', {str(talos_dir)!r}]",
        "from dr.main import main",
        "p = cProfile.Profile(time.process_time)",
        "try:",
        "    p.runcall(main)",
        "except SystemExit:",
        "    pass",
        f"p.dump_stats({str(out)!r})",
    ])
    subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=False)
    shutil.rmtree(talos_dir, ignore_errors=True)
    buf = io.StringIO()
    stats = pstats.Stats(str(out), stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def markdown(all_runs: dict[str, dict]) -> str:
    lines = [BEGIN, "## The client's CPU per GiB: `python -m bench.client_cpu`", "",
             "CPU-seconds (user + system, `getrusage(RUSAGE_CHILDREN)` around a fresh `talos-dr backup --save-to-s3` "
             "process) per GiB of snapshot, against the apid named in each row. CPU time rather than wall time, "
             "because the machine was shared with other developers while these were taken (load averages below); "
             "each figure is the median of the runs, all runs listed. The grpc-go stand-in (sandbox/goapid/) sends "
             "every 1 KiB message in a DATA frame of its own, as a real apid does; the Python one packs them.", "",
             "*Marginal* leaves out what a run costs whatever the size (interpreter start, imports, credentials, S3 "
             "calls), measured on the seeded etcd (tens of KiB) before etcd was grown: the cost that grows with the "
             "snapshot.", "",
             "| label | apid | snapshot MiB | plain CPU-s/GiB | zstd CPU-s/GiB | zstd+age CPU-s/GiB | Lambda path "
             "CPU-s/GiB | marginal plain / zstd / zstd+age / Lambda CPU-s/GiB | fixed CPU-s per run | runs (CPU-s/GiB) "
             "| load before / after | measured |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, d in all_runs.items():
        per = {v: [c / (s / GIB) for c, _, s in d["runs"][v]] for v in d["runs"]}
        med = {v: f"{statistics.median(x):.1f}" for v, x in per.items()}
        runs = "; ".join(f"{v}: " + ", ".join(f"{x:.1f}" for x in xs) for v, xs in per.items())
        fixed = d.get("fixed") or {}
        marginal = " / ".join(
            f"{statistics.median((c - fixed[v]) / (s / GIB) for c, _, s in d['runs'][v]):.1f}" if v in fixed else "-"
            for v in VARIANTS)
        fixed_text = " / ".join(f"{fixed[v]:.2f}" for v in VARIANTS if v in fixed) or "not measured"
        lines.append(f"| {label} | {d['apid']} | {d['size'] / MIB:.0f} | **{med.get('plain', '-')}** | "
                     f"{med.get('zstd', '-')} | {med.get('zstd_age', '-')} | {med.get('lambda', '-')} | {marginal} | "
                     f"{fixed_text} | {runs} | {d['load_before']} / {d['load_after']} | {d['at']} |")
    lam = [(label, d) for label, d in all_runs.items() if d["runs"].get("lambda") and "lambda" in (d.get("fixed") or {})]
    if lam:
        label, d = lam[-1]
        marginal = statistics.median((c - d["fixed"]["lambda"]) / (s / GIB) for c, _, s in d["runs"]["lambda"])
        need = d["fixed"]["lambda"] + marginal * QUOTA / GIB
        lines += ["", f"**The Lambda at etcd's 2 GiB quota** (row {label!r}): the Lambda's path needs about "
                  f"{d['fixed']['lambda']:.2f} + {marginal:.1f} × 2 = **{need:.0f} CPU-seconds** for a 2 GiB snapshot "
                  f"(measured here at {d['size'] / MIB:.0f} MiB and scaled; the machine's cores, not Lambda's). Lambda "
                  f"gives a function CPU in proportion to its memory, one vCPU at {LAMBDA_MB_PER_VCPU} MB (AWS Lambda "
                  "Developer Guide, configuration-memory), so within the handler's "
                  f"{LAMBDA_BUDGET_S:.0f} s a function of M MB has {LAMBDA_BUDGET_S:.0f} × M / {LAMBDA_MB_PER_VCPU} "
                  "CPU-seconds:", "",
                  "| memory MB | vCPU share | CPU-s in 840 s | margin over the need |", "| --- | --- | --- | --- |"]
        for mb in (512, 768, 1024, 1769):
            budget = LAMBDA_BUDGET_S * mb / LAMBDA_MB_PER_VCPU
            lines.append(f"| {mb} | {mb / LAMBDA_MB_PER_VCPU:.2f} | {budget:.0f} | {budget / need:.1f}× |")
    for label, d in all_runs.items():
        share = d.get("lambda_cpu_share")
        if share and d["runs"].get("lambda"):
            walls = [w for _, w, _ in d["runs"]["lambda"]]
            size = d["runs"]["lambda"][0][2]
            scaled = statistics.median(walls) * QUOTA / size
            lines += ["", f"Under a real CPU limit (row {label!r}): the Lambda path in a cgroup with a CFS quota of "
                      f"{share:.3f} CPUs ({share * LAMBDA_MB_PER_VCPU:.0f} MB's share) took "
                      + ", ".join(f"{w:.1f}" for w in walls) + f" s of wall time for {size / MIB:.0f} MiB: about "
                      f"**{scaled:.0f} s at 2 GiB** (scaled linearly), against the handler's {LAMBDA_BUDGET_S:.0f} s."]
    lines += ["", END]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.client_cpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=parse_size, default=256 * MIB, help="snapshot size to grow etcd to (default 256M)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--apid", choices=("go", "python"), default="go")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--profile", action="store_true", help="one more plain run under cProfile")
    p.add_argument("--label", default="now", help="the row's name (e.g. before, after)")
    p.add_argument("--lambda-memory-mb", type=int, default=0,
                   help="run the Lambda path under a CPU quota of MB/1769 CPUs (a cgroup v1 cpu child), as Lambda "
                        "gives a function of that memory")
    p.add_argument("--results", help="replace this bench's section of this Markdown file")
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]

    from sandbox.api import Sandbox

    OUT.mkdir(parents=True, exist_ok=True)
    os.environ["SANDBOX_ETCDCTL_BIN"] = str(etcdctl_shim())
    load_before = load()
    sb = Sandbox.up(OUT / f"sandbox-cpu-{args.apid}", apid=args.apid)
    runs: dict[str, list[tuple[float, float, int]]] = {v: [] for v in variants}
    prof = ""
    fixed: dict[str, float] = {}
    bucket = sb.bucket or ""
    limit = None
    if args.lambda_memory_mb:
        try:
            limit = CpuLimit(args.lambda_memory_mb / LAMBDA_MB_PER_VCPU)
        except OSError as exc:
            print(f"no CPU limit (cgroup v1 cpu controller not writable: {exc}); CPU-seconds only", flush=True)
    try:
        env = {**os.environ, **sb.env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        env.pop("DR_TALOS_DIR", None)
        os.environ.update(sb.env)  # this process's S3 client (emptying the bucket between runs)
        key = OUT / "client-cpu-age.key"
        key.unlink(missing_ok=True)
        subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
        recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True,
                                   text=True).stdout.strip()
        from dr.adapters import s3

        client = s3.make_client(sb.region)
        work = OUT / "work-cpu"
        for v in variants:  # the seeded etcd only (tens of KiB): what a run costs whatever the size
            e = {**env, "DR_AGE_RECIPIENTS": recipient} if v == "zstd_age" else env
            fixed[v] = run_backup(e, v, work / "talos", sb, limit)[0]
            clean_bucket(client, bucket)
        print(f"fixed cost (a tiny snapshot): {fixed}", flush=True)
        t0 = time.monotonic()
        fill.fill(sb.etcd_endpoint, args.size)
        print(f"etcd grown by {args.size / MIB:.0f} MiB in {time.monotonic() - t0:.0f}s", flush=True)
        for rep in range(args.reps):
            for v in variants:
                e = {**env, "DR_AGE_RECIPIENTS": recipient} if v == "zstd_age" else env
                cpu, wall, size = run_backup(e, v, work / "talos", sb, limit)
                runs[v].append((cpu, wall, size))
                print(f"[{args.label} {args.apid} rep {rep}] {v}: {cpu:.2f} CPU-s ({cpu / (size / GIB):.1f} CPU-s/GiB), "
                      f"wall {wall:.2f}s, {size / MIB:.1f} MiB", flush=True)
                clean_bucket(client, bucket)
        if args.profile:
            prof = profile_backup(env, work / "talos", OUT / f"client_cpu-{args.label}.prof")
            clean_bucket(client, bucket)
            print(prof)
    finally:
        sb.down()
        if limit is not None:
            limit.close()
    size = next((r[0][2] for r in runs.values() if r), 0)
    data = {"label": args.label, "apid": "grpc-go stand-in" if args.apid == "go" else "Python h2 stand-in",
            "size": size, "runs": runs, "fixed": fixed,
            "lambda_cpu_share": limit.share if limit else None, "load_before": load_before, "load_after": load(),
            "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "profile": prof}
    (OUT / f"client_cpu-{args.label}.json").write_text(json.dumps(data, indent=2))
    all_runs = {}
    for f in sorted(OUT.glob("client_cpu-*.json"), key=lambda f: f.stat().st_mtime):
        d = json.loads(f.read_text())
        all_runs[d["label"]] = d
    text = markdown(all_runs)
    print(text)
    if args.results:
        write_section(Path(args.results), text, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
