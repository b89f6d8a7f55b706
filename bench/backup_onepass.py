"""``python -m bench.backup_onepass [--sizes 10M,100M,1G] [--slow-sizes 10M,100M] [--results bench/RESULTS.md]``

dr.backup's one pass (the node's stream verified and uploaded as it arrives) against the playbook's two, side by side in one run, on one sandbox (its real etcd,
the node's apid on the Elastic IP, moto's S3 server) grown to each size in turn. At each size, each in a fresh
process under ``bench/probe.py`` (own peak RSS, own /proc/self/io):

* baseline: the sandbox's ``talosctl etcd snapshot`` (no wire: it copies etcdctl's file), then ``aws s3 cp`` (the
  awscli venv of ``make bench``; boto3's ``upload_file`` stands in when it is missing, and the report says so);
* ``dr.backup --save-to-s3 --via-talosctl --no-compress``: the previous dr.backup (talosctl, check, upload);
* ``dr.backup --save-to-s3 --no-compress``: one pass through the Talos API, stored plain (what the baseline stores);
* ``dr.backup --save-to-s3``: one pass, zstd (the default); and with ``DR_AGE_RECIPIENTS`` (from ``age-keygen``):
  zstd+age;
* the Lambda's path (``snapshot_lambda.handler.take_snapshot``: no ``nodes`` metadata, zstd) at apid's 1 KiB
  messages;
* with ``--slow-sizes``: the same baseline and one pass over a slow link: the node's stream throttled (the sandbox's
  ``snapshot_throttle_bytes_per_second``, talosctl's copy and apid's stream alike) and S3 behind
  ``tests/faults/s3proxy.py`` throttled both ways, at ``--link-mb-s`` each.

Figures go to bench/out/onepass.json; ``--results FILE`` replaces this bench's section of FILE (between its
markers), leaving the rest as it is. Measurements, not tests: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import fill
from bench.__main__ import (
    AWSCLI_VENV,
    MIB,
    OUT,
    SIZES,
    clean_bucket,
    clean_dir,
    etcdctl_shim,
    machine,
    parse_sizes,
    probe,
)
from bench.results import load, write_section

BEGIN = "<!-- BEGIN bench.backup_onepass -->"
END = "<!-- END bench.backup_onepass -->"
VARIANTS = ("via_talosctl", "onepass_plain", "onepass_zstd", "onepass_zstd_age")
FLAGS = {
    "via_talosctl": ["--via-talosctl", "--no-compress"],
    "onepass_plain": ["--no-compress"],
    "onepass_zstd": [],
    "onepass_zstd_age": [],
}


def lambda_main() -> int:
    """Under the probe: the scheduled Lambda's ``take_snapshot`` against the sandbox's apid (argv: talosconfig, host,
    port, bucket, cluster). Prints the result as JSON."""
    from dr.adapters.talosctl import load_talosconfig, talosconfig_credentials
    from snapshot_lambda.handler import RunnerSettings, take_snapshot

    talosconfig, host, port, bucket, cluster = sys.argv[1:6]
    creds = talosconfig_credentials(load_talosconfig(Path(talosconfig)))
    settings = RunnerSettings(bucket=bucket, node=host, credential_key="-", cluster=cluster, port=int(port),
                              timeout=3600)
    print(json.dumps(take_snapshot(settings, creds, recipients=[]).to_dict()))
    return 0


def stored_objects(client, bucket: str) -> dict[str, int]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            if not o["Key"].endswith("/latest"):
                out[o["Key"]] = o["Size"]
    return out


def run_baseline(sb, env: dict, work: Path, tag: str, endpoint: str) -> dict:
    base = work / "baseline"
    clean_dir(base)
    snap = base / "etcd-snapshot.db"
    t = probe(sys.executable, "sandbox.talosctl:main", ["etcd", "snapshot", str(snap)], env, work, f"op-talosctl-{tag}")
    key = f"baseline/{tag}/etcd-snapshot.db"
    if (AWSCLI_VENV / "bin" / "aws").exists():
        up = probe(str(AWSCLI_VENV / "bin" / "python"), "awscli.clidriver:main",
                   ["s3", "cp", "--only-show-errors", "--endpoint-url", endpoint, str(snap), f"s3://{sb.bucket}/{key}"],
                   env, work, f"op-aws-{tag}")
        uploader = "aws s3 cp"
    else:
        up = probe(sys.executable, "bench.stand_in:main", [str(snap), sb.bucket, key], {**env,
                   "AWS_ENDPOINT_URL_S3": endpoint}, work, f"op-boto3-{tag}")
        uploader = "boto3 upload_file (stand-in: awscli not installed)"
    size = snap.stat().st_size
    shutil.rmtree(base)
    return {"uploader": uploader, "size": size, "wall_s": t["process_wall_s"] + up["process_wall_s"],
            "talosctl_s": t["process_wall_s"], "upload_s": up["process_wall_s"], "upload_hwm_mib": up["vmhwm_kib"] / 1024,
            "upload_rchar": up["io"]["rchar"], "talosctl_hwm_mib": t["vmhwm_kib"] / 1024,
            "talosctl_rchar": t["io"]["rchar"]}


def run_dr(sb, env: dict, work: Path, tag: str, variant: str) -> dict:
    talos_dir = work / "talos"
    if talos_dir.exists():
        shutil.rmtree(talos_dir)
    d = probe(sys.executable, "dr.backup:main", ["--save-to-s3", *FLAGS[variant], "--talos-dir", str(talos_dir)],
              env, work, f"op-{variant}-{tag}")
    [local] = sorted((talos_dir / "snapshots").glob("etcd-snapshot-*.db"))
    size = local.stat().st_size
    shutil.rmtree(talos_dir)
    return {"size": size, "wall_s": d["process_wall_s"], "hwm_mib": d["vmhwm_kib"] / 1024, "rchar": d["io"]["rchar"],
            "wchar": d["io"]["wchar"], "read_bytes": d["io"]["read_bytes"], "children_rchar_note": "",
            "cpu_s": d["cpu_s"], "children_cpu_s": d["children_cpu_s"]}


def run_lambda(sb, env: dict, work: Path, tag: str) -> dict:
    d = probe(sys.executable, "bench.backup_onepass:lambda_main",
              [str(sb.talosconfig), sb.public_ip, str(sb.info.apid_port), sb.bucket or "", sb.cluster_name], env, work,
              f"op-lambda-{tag}")
    return {"wall_s": d["process_wall_s"], "call_s": d["wall_s"], "hwm_mib": d["vmhwm_kib"] / 1024,
            "cpu_s": d["cpu_s"]}


def one_size(sb, env: dict, enc_env: dict, work: Path, label: str, reps: int, endpoint: str) -> dict:
    from dr.adapters import s3

    client = s3.make_client(sb.region)
    rows: dict[str, list[dict]] = {"baseline": [], **{v: [] for v in VARIANTS}, "lambda": []}
    for rep in range(reps):
        tag = f"{label}-{rep}"
        rows["baseline"].append(run_baseline(sb, env, work, tag, endpoint))
        clean_bucket(client, sb.bucket)
        for v in VARIANTS:
            r = run_dr(sb, enc_env if v == "onepass_zstd_age" else env, work, tag, v)
            objs = stored_objects(client, sb.bucket)
            r["stored"] = sum(objs.values())
            rows[v].append(r)
            clean_bucket(client, sb.bucket)
        rows["lambda"].append(run_lambda(sb, env, work, tag))
        objs = stored_objects(client, sb.bucket)
        rows["lambda"][-1]["stored"] = sum(objs.values())
        clean_bucket(client, sb.bucket)
    size = rows["onepass_plain"][-1]["size"]

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[name])

    res: dict = {"size_label": label, "snapshot_bytes": size, "reps": reps, "runs": rows,
                 "uploader": rows["baseline"][-1]["uploader"], "baseline_wall_s": med("baseline", "wall_s"),
                 "baseline_talosctl_s": med("baseline", "talosctl_s"), "baseline_upload_s": med("baseline", "upload_s"),
                 "baseline_upload_hwm_mib": max(r["upload_hwm_mib"] for r in rows["baseline"]),
                 "baseline_upload_rchar_x": rows["baseline"][-1]["upload_rchar"] / size,
                 "lambda_wall_s": med("lambda", "wall_s"), "lambda_call_s": med("lambda", "call_s"),
                 "lambda_hwm_mib": max(r["hwm_mib"] for r in rows["lambda"]),
                 "lambda_stored_x": rows["lambda"][-1]["stored"] / size}
    for v in VARIANTS:
        res[v] = {"wall_s": med(v, "wall_s"), "ratio": med(v, "wall_s") / res["baseline_wall_s"],
                  "hwm_mib": max(r["hwm_mib"] for r in rows[v]), "rchar_x": rows[v][-1]["rchar"] / size,
                  "wchar_x": rows[v][-1]["wchar"] / size, "stored_x": rows[v][-1]["stored"] / size,
                  "cpu_s": med(v, "cpu_s"), "children_cpu_s": med(v, "children_cpu_s")}
    print(f"[{label}] baseline {res['baseline_wall_s']:.2f}s; " + "; ".join(
        f"{v} {res[v]['wall_s']:.2f}s ({res[v]['ratio']:.2f}x, {res[v]['hwm_mib']:.0f} MiB)" for v in VARIANTS)
        + f"; lambda {res['lambda_wall_s']:.2f}s", flush=True)
    return res


def slow_size(sb, env: dict, work: Path, label: str, rate: float) -> dict:
    """Baseline and one pass with the node's stream and S3 (both ways) at ``rate`` bytes/s each."""
    from dr.adapters import s3
    from tests.faults.s3proxy import FaultProxy

    client = s3.make_client(sb.region)
    assert sb.info.s3_port is not None
    proxy = FaultProxy(sb.info.s3_port)
    proxy.throttle(rate)
    sb.set_faults(snapshot_throttle_bytes_per_second=int(rate))
    slow_env = {**env, "AWS_ENDPOINT_URL_S3": proxy.endpoint}
    try:
        tag = f"slow-{label}"
        b = run_baseline(sb, slow_env, work, tag, proxy.endpoint)
        clean_bucket(client, sb.bucket)
        d = run_dr(sb, slow_env, work, tag, "onepass_plain")
        clean_bucket(client, sb.bucket)
        z = run_dr(sb, slow_env, work, tag, "onepass_zstd")
        clean_bucket(client, sb.bucket)
    finally:
        sb.set_faults(snapshot_throttle_bytes_per_second=None)
        proxy.close()
    res = {"size_label": label, "snapshot_bytes": d["size"], "rate": rate, "baseline_wall_s": b["wall_s"],
           "baseline_talosctl_s": b["talosctl_s"], "baseline_upload_s": b["upload_s"], "onepass_plain_wall_s": d["wall_s"],
           "onepass_zstd_wall_s": z["wall_s"], "uploader": b["uploader"]}
    res["ratio"] = d["wall_s"] / b["wall_s"]
    print(f"[slow {label}] baseline {b['wall_s']:.2f}s ({b['talosctl_s']:.2f} + {b['upload_s']:.2f}); one pass "
          f"{d['wall_s']:.2f}s ({res['ratio']:.2f}x); zstd {z['wall_s']:.2f}s", flush=True)
    return res


def markdown(data: dict) -> str:
    mach, results, slow = data["machine"], data["results"], data["slow"]
    lines = [BEGIN, "## Backup in one pass: `python -m bench.backup_onepass`", "",
             f"Measured {data['at']} with `{data['command']}` (load average {data['load_before']} before, "
             f"{data['load_after']} after, on {mach['nproc']} cores; {data['quiet']}).", "",
             "Each figure is one fresh process under `bench/probe.py` (interpreter start included), the median of the "
             "runs at that size. *Baseline* is the sandbox's `talosctl etcd snapshot` (it copies etcdctl's file: no "
             "wire, no TLS) then " + (f"`{results[0]['uploader']}`" if results else "the upload") + ". dr.backup "
             "streams through the node's apid on the Elastic IP (TLS, HTTP/2, 1 KiB messages, in Python on both "
             "ends, on the same 2 cores). Reads are `rchar` ÷ snapshot size: every `read()` syscall, so the TLS "
             "socket's reads of the stream from the node (≈1.0×) are counted in it; the one-pass dr.backup never "
             "reads its snapshot file (written once, read 0 times). Stored is the bucket's bytes ÷ snapshot size "
             "(the bench fills etcd with random 1 MB values, as incompressible as encrypted Secrets: the worst case "
             "for zstd).", "",
             "| snapshot | baseline s (talosctl + upload) | previous dr.backup (--via-talosctl) s | one pass plain s | "
             "ratio one pass ÷ baseline | one pass zstd s | one pass zstd+age s | peak MiB (one pass plain / zstd / "
             "zstd+age; baseline upload) | reads ÷ size (one pass; baseline upload) | stored ÷ size (zstd / "
             "zstd+age) | zstd cost s | zstd+age cost s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        p, z, a, v = r["onepass_plain"], r["onepass_zstd"], r["onepass_zstd_age"], r["via_talosctl"]
        lines.append(
            f"| {r['size_label']} ({r['snapshot_bytes'] / MIB:.1f} MiB) | {r['baseline_wall_s']:.2f} "
            f"({r['baseline_talosctl_s']:.2f} + {r['baseline_upload_s']:.2f}) | {v['wall_s']:.2f} ({v['ratio']:.2f}×) "
            f"| {p['wall_s']:.2f} | **{p['ratio']:.2f}×** | {z['wall_s']:.2f} ({z['ratio']:.2f}×) | {a['wall_s']:.2f} "
            f"({a['ratio']:.2f}×) | {p['hwm_mib']:.0f} / {z['hwm_mib']:.0f} / {a['hwm_mib']:.0f}; "
            f"{r['baseline_upload_hwm_mib']:.0f} | {p['rchar_x']:.2f}×; {r['baseline_upload_rchar_x']:.2f}× | "
            f"{z['stored_x']:.3f} / {a['stored_x']:.3f} | {z['wall_s'] - p['wall_s']:+.2f} | "
            f"{a['wall_s'] - p['wall_s']:+.2f} |")
    lines += ["", "The Lambda's path (`snapshot_lambda.handler.take_snapshot`: the same client with no `nodes` metadata, "
              "zstd, apid's 1 KiB messages), in a fresh process against the same apid:", "",
              "| snapshot | whole process s | the call s | throughput MB/s (the call) | peak MiB | stored ÷ size |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r['size_label']} | {r['lambda_wall_s']:.2f} | {r['lambda_call_s']:.2f} | "
                     f"{r['snapshot_bytes'] / r['lambda_call_s'] / 1e6:.0f} | {r['lambda_hwm_mib']:.0f} | "
                     f"{r['lambda_stored_x']:.3f} |")
    if slow:
        lines += ["", f"Over a slow link: the node's stream and S3 (both ways, through `tests/faults/s3proxy.py`) each "
                  f"limited to {slow[0]['rate'] / 1e6:.0f} MB/s, as from a laptop far from the node and from S3:", "",
                  "| snapshot | baseline s (talosctl + upload) | one pass plain s | ratio | one pass zstd s |",
                  "| --- | --- | --- | --- | --- |"]
        for s in slow:
            lines.append(f"| {s['size_label']} ({s['snapshot_bytes'] / MIB:.1f} MiB) | {s['baseline_wall_s']:.2f} "
                         f"({s['baseline_talosctl_s']:.2f} + {s['baseline_upload_s']:.2f}) | "
                         f"{s['onepass_plain_wall_s']:.2f} | **{s['ratio']:.2f}×** | {s['onepass_zstd_wall_s']:.2f} |")
    lines += ["", data.get("notes", "").strip(), END]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.backup_onepass", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=parse_sizes, default=list(SIZES))
    p.add_argument("--slow-sizes", type=lambda t: parse_sizes(t) if t else [], default=["10M", "100M"])
    p.add_argument("--link-mb-s", type=float, default=20.0, help="the slow link's rate each way, MB/s (default 20)")
    p.add_argument("--reps", type=int, default=3, help="runs below 1 GiB (median; 1G runs once)")
    p.add_argument("--results", help="replace this bench's section of this Markdown file (e.g. bench/RESULTS.md)")
    p.add_argument("--notes", default="", help="a paragraph to add under the tables")
    args = p.parse_args(argv)
    sizes = args.sizes
    slow_sizes = [s for s in args.slow_sizes]
    command = f"python -m bench.backup_onepass --sizes {','.join(sizes)} --slow-sizes {','.join(slow_sizes) or ''}"

    from sandbox.api import Sandbox

    OUT.mkdir(parents=True, exist_ok=True)
    mach = machine()
    load_before = load()
    # Before `up`: the node's apid (its own process) inherits it, for etcdctl snapshots of a big etcd.
    os.environ["SANDBOX_ETCDCTL_BIN"] = str(etcdctl_shim())
    sb = Sandbox.up(OUT / "sandbox-onepass", reboot_seconds=0.5, bootstrap_not_ready_seconds=0.3)
    results: list[dict] = []
    slow: list[dict] = []
    try:
        env = dict(sb.env)
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
        env.pop("DR_TALOS_DIR", None)
        os.environ.update(env)
        key = OUT / "onepass-age.key"
        key.unlink(missing_ok=True)
        subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
        recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True,
                                   text=True).stdout.strip()
        enc_env = {**env, "DR_AGE_RECIPIENTS": recipient}
        work = OUT / "work-onepass"
        work.mkdir(parents=True, exist_ok=True)
        assert sb.s3_endpoint is not None
        put, idx = 0, 0
        for label in sorted(set(sizes) | set(slow_sizes), key=lambda s: SIZES[s]):
            t0 = time.monotonic()
            idx = fill.fill(sb.etcd_endpoint, SIZES[label] - put, idx)
            put = SIZES[label]
            print(f"[{label}] etcd filled in {time.monotonic() - t0:.1f}s", flush=True)
            if label in sizes:
                results.append(one_size(sb, env, enc_env, work, label, 1 if SIZES[label] >= SIZES["1G"] else args.reps,
                                        sb.s3_endpoint))
            if label in slow_sizes:
                slow.append(slow_size(sb, env, work, label, args.link_mb_s * 1e6))
    finally:
        sb.down()
    load_after = load()
    quiet = ("the machine was shared: another session's benchmarks or tests may have run at the same time"
             if max(float(load_before.split()[0]), float(load_after.split()[0])) > 1.0 else "the machine was quiet")
    data = {"machine": mach, "command": command, "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "load_before": load_before, "load_after": load_after, "quiet": quiet, "results": results, "slow": slow,
            "notes": args.notes}
    (OUT / "onepass.json").write_text(json.dumps(data, indent=2))
    text = markdown(data)
    print(text)
    if args.results:
        write_section(Path(args.results), text, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
