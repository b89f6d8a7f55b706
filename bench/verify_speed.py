"""``python -m bench.verify_speed [--sizes 10M,100M,1G] [--shapes large,small]``: seconds per GiB of dr.verify.

Each snapshot is taken from a real etcd (3.5 from ``make etcd`` when it is there, else PATH's), filled with random,
incompressible values under ``/registry/``, and kept in bench/out/verify-speed/ for the next run. Two shapes:

* ``large``: 1 MB values, as ``python -m bench`` grows the sandbox's etcd (bench/fill.py): few keys, so the time is
  the bytes (hash checks, restore's copy, etcd's start).
* ``small``: values of 1-8 KiB (4.5 KiB on average) spread over ten resource types, like a real cluster's objects:
  about 230 000 keys per GiB, so the time is also reading every key back.

Each snapshot is verified as a local file in a fresh ``python -m dr.verify FILE --json`` process (interpreter start
included; no S3 download, which ``python -m bench`` measures through moto), ``--reps`` times (the median is
reported). The phases come from the report's own ``seconds``: ``integrity`` (trailer and ``snapshot status``) and
``restore`` (restore into the throwaway etcd, its start, reading every key back). Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.results import load

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "verify-speed"
MIB = 1024 * 1024
GIB = 1024 * MIB
SIZES = {"10M": 10 * MIB, "100M": 100 * MIB, "1G": GIB}
SHAPES = ("large", "small")
SMALL_TYPES = ("configmaps", "secrets", "pods", "events", "services/specs", "deployments", "replicasets",
               "leases", "serviceaccounts", "apps.example.com/widgets")
TXN_OPS = 128  # etcd's default --max-txn-ops


def _tools_dir() -> Path | None:
    from dr.adapters.etcdlocal import etcd35_bin_dir

    d = etcd35_bin_dir()
    return d if (d / "etcd").is_file() and (d / "etcdctl").is_file() else None


def _post(endpoint: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"{endpoint}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"{}")


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _batches(shape: str, size: int):
    """Lists of (key, value) puts adding up to ``size`` bytes of values, each list one request's worth."""
    rnd = random.Random(size)
    put = 0
    i = 0
    while put < size:
        batch, batch_bytes = [], 0
        while put < size and len(batch) < TXN_OPS and batch_bytes < 900_000:
            if shape == "large":
                n = 1_000_000
                key = f"/registry/configmaps/bench/cm-{i:06d}"
            else:
                n = rnd.randint(1024, 8192)
                t = SMALL_TYPES[i % len(SMALL_TYPES)]
                key = f"/registry/{t}/ns-{i % 97:02d}/obj-{i:08d}"
            batch.append((key.encode(), os.urandom(n)))
            batch_bytes += n
            put += n
            i += 1
        yield batch


def _fill(endpoint: str, shape: str, size: int) -> None:
    def send(batch: list[tuple[bytes, bytes]]) -> None:
        if len(batch) == 1:
            _post(endpoint, "/v3/kv/put", {"key": _b64(batch[0][0]), "value": _b64(batch[0][1])})
        else:
            _post(endpoint, "/v3/kv/txn", {"success": [
                {"request_put": {"key": _b64(k), "value": _b64(v)}} for k, v in batch]})

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(send, _batches(shape, size)))


def make_snapshot(label: str, shape: str) -> Path:
    """bench/out/verify-speed/<shape>-<label>.db, taken once from a real etcd filled to the size."""
    from dr.adapters.ports import free_port

    OUT.mkdir(parents=True, exist_ok=True)
    dest = OUT / f"{shape}-{label}.db"
    if dest.exists():
        return dest
    bin_dir = _tools_dir()
    etcd = str(bin_dir / "etcd") if bin_dir else (shutil.which("etcd") or "etcd")
    etcdctl = str(bin_dir / "etcdctl") if bin_dir else (shutil.which("etcdctl") or "etcdctl")
    work = Path(tempfile.mkdtemp(prefix="fill-", dir=OUT))
    cport, pport = free_port(), free_port()
    client, peer = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{pport}"
    t0 = time.monotonic()
    with open(work / "etcd.log", "wb") as log:
        proc = subprocess.Popen([etcd, "--name", "fill", "--data-dir", str(work / "data"),
                                 "--listen-client-urls", client, "--advertise-client-urls", client,
                                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                                 "--initial-cluster", f"fill={peer}", "--quota-backend-bytes", str(8 * GIB),
                                 # 3.5 only: filling is not what is measured, and fsync is most of its time
                                 *(["--unsafe-no-fsync"] if bin_dir else []), "--log-level", "error"],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _post(client, "/v3/kv/range", {"key": _b64(b"x")})
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the fill etcd did not start; see {work / 'etcd.log'}") from None
                time.sleep(0.1)
        _fill(client, shape, SIZES[label])
        part = dest.with_suffix(".part")
        subprocess.run([etcdctl, "--endpoints", client, "snapshot", "save", str(part)], check=True,
                       env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True)
        part.rename(dest)
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    print(f"[{shape} {label}] snapshot of {dest.stat().st_size / MIB:.1f} MiB taken in "
          f"{time.monotonic() - t0:.1f}s", flush=True)
    return dest


def verify_once(snap: Path, env: dict, code: Path) -> dict:
    """One ``python -m dr.verify SNAP --json`` in a fresh process: wall seconds and the report's own phases."""
    tmp = Path(tempfile.mkdtemp(prefix="tmp-", dir=OUT))
    try:
        t0 = time.monotonic()
        path = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
        r = subprocess.run([sys.executable, "-m", "dr.verify", str(snap), "--json", "--tmp-dir", str(tmp)],
                           capture_output=True, text=True, env={**env, "PYTHONPATH": path}, cwd=code)
        wall = time.monotonic() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if r.returncode != 0:
        raise RuntimeError(f"dr.verify {snap} failed (exit {r.returncode}): {r.stderr.strip()[-400:]}")
    rep = json.loads(r.stdout)
    return {"wall_s": wall, "integrity_s": rep["seconds"].get("integrity", 0.0),
            "restore_s": rep["seconds"].get("restore", 0.0), "keys": rep["total_keys"],
            "tool": rep["tools"].get("restore", "")}


BEGIN = "<!-- BEGIN bench.verify_speed -->"
END = "<!-- END bench.verify_speed -->"


def _version(exe: str) -> str:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20).stdout
        return out.splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


def markdown(rows: list[dict], command: str, etcd: str, loads: tuple[str, str], title: str) -> str:
    lines = [f"### {title}", "", f"`{command}` ({etcd}; load average {loads[0]} before, {loads[1]} after, "
             f"on {os.cpu_count()} cores)", "",
             "| snapshot | keys | restored with | dr.verify s (median) | integrity s | restore + start + read back s "
             "| s per GiB |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['shape']} {r['size_label']} ({r['bytes'] / MIB:.1f} MiB) | {r['keys']} | {r['tool']} | "
                     f"{r['wall_s']:.2f} | {r['integrity_s']:.2f} | {r['restore_s']:.2f} | {r['s_per_gib']:.1f} |")
    return "\n".join(lines) + "\n"


INTRO = """## Verify speed: `python -m bench.verify_speed`

dr.verify on local snapshot files (no S3 download), each in a fresh process, interpreter start included; the median of
`--reps` runs. Snapshots are taken from a real etcd filled with random values under `/registry/`: *large* is 1 MB
values (as `python -m bench` fills the sandbox), *small* is 1-8 KiB values over ten resource types (about 230 000
keys per GiB, like a real cluster's objects). *integrity* is the report's own `seconds.integrity` (hash trailer and
`snapshot status`); *restore + start + read back* its `seconds.restore` (restore into the throwaway etcd, its start,
every key read back at the snapshot's revision, counted per resource type). The machine is shared: the load average
is printed with each table.
"""


def write_section(results: Path, text: str) -> None:
    """Add ``text`` to the verify-speed section of ``results`` (between BEGIN and END; created at the end of the
    file when missing). ``python -m bench --results`` keeps that section when it rewrites the rest of the file."""
    old = results.read_text() if results.exists() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        body, tail = rest.split(END, 1)
    else:
        head, body, tail = (old.rstrip("\n") + "\n\n" if old else ""), "\n" + INTRO, "\n"
    results.write_text(f"{head}{BEGIN}{body.rstrip()}\n\n{text}{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.verify_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10M,100M,1G", help="comma-separated: 10M,100M,1G (default all)")
    p.add_argument("--shapes", default=",".join(SHAPES), help="large (1 MB values), small (1-8 KiB), or both")
    p.add_argument("--reps", type=int, default=3, help="runs per snapshot (median)")
    p.add_argument("--etcd", choices=("path", "3.5"), default="3.5",
                   help="which etcd dr.verify finds first on PATH: 3.5 (make etcd's, with etcdutl) or PATH's own")
    p.add_argument("--code", type=Path, default=ROOT,
                   help="run dr.verify from this checkout (default: this one), to compare before and after")
    p.add_argument("--title", default="dr.verify on local snapshot files", help="the heading of this run's table")
    p.add_argument("--results", type=Path, help="also add this run's table to the verify-speed section of FILE "
                                                "(e.g. bench/RESULTS.md)")
    args = p.parse_args(argv)
    sizes = [s.strip().upper() for s in args.sizes.split(",") if s.strip()]
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if set(sizes) - set(SIZES) or set(shapes) - set(SHAPES):
        p.error(f"--sizes takes {','.join(SIZES)}; --shapes takes {','.join(SHAPES)}")
    env = dict(os.environ)
    bin_dir = _tools_dir()
    if args.etcd == "3.5":
        if bin_dir is None:
            p.error("etcd 3.5 is not unpacked: run `make etcd`, or pass --etcd path")
        env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    rows = []
    load0 = load()
    for shape in shapes:
        for label in sizes:
            snap = make_snapshot(label, shape)
            runs = [verify_once(snap, env, args.code.resolve()) for _ in range(args.reps)]
            size = snap.stat().st_size
            med = {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "integrity_s", "restore_s")}
            row = {"shape": shape, "size_label": label, "bytes": size, "keys": runs[0]["keys"],
                   "tool": runs[0]["tool"], **med, "s_per_gib": med["wall_s"] / (size / GIB)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    etcd = shutil.which("etcd", path=env["PATH"]) or "etcd"
    command = shlex.join(["python", "-m", "bench.verify_speed", *(argv if argv is not None else sys.argv[1:])])
    text = markdown(rows, command, _version(etcd), (load0, load()), args.title)
    print()
    print(text)
    if args.results:
        write_section(args.results, text)
    (OUT / "results.json").write_text(json.dumps({"argv": sys.argv[1:], "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
