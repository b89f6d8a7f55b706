"""``python -m bench.grpclib_eval [--size 256M] [--reps 3]``: the project's Talos API client against ``grpclib``.

Both stream the same ``EtcdSnapshot`` from the grpc-go apid stand-in (a synthetic snapshot file of ``--size``), each in
a fresh process, with the same 4 MiB windows and the same work per message (cut the 1 KiB payload, join 64 KiB,
SHA-256); each prints its CPU-seconds. grpclib runs from a throwaway venv outside the project
(``$TMPDIR/talos-dr-grpclib-eval``: ``pip install grpclib``), never the project's locks: it is being evaluated, not
adopted. The same file also holds the grpclib client (``--grpclib-client``), which imports only the standard
library and grpclib.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024
EVAL_VENV = Path(os.environ.get("TMPDIR") or "/tmp") / "talos-dr-grpclib-eval"


def grpclib_client(host: str, port: int, ca: str, cert: str, key: str) -> tuple[int, float]:
    import asyncio

    from grpclib.client import Channel  # type: ignore[import-not-found]
    from grpclib.config import Configuration  # type: ignore[import-not-found]
    from grpclib.const import Cardinality  # type: ignore[import-not-found]
    from grpclib.encoding.base import CodecBase  # type: ignore[import-not-found]

    class Raw(CodecBase):  # messages as bytes: the same per-message work as the project's client
        __content_subtype__ = "proto"

        def encode(self, message, message_type):
            return message

        def decode(self, data, message_type):
            return data

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])

    async def one() -> int:
        cfg = Configuration(http2_connection_window_size=4 * MIB, http2_stream_window_size=4 * MIB)
        ch = Channel(host, port, ssl=ctx, codec=Raw(), config=cfg)
        h, n, pending, size = hashlib.sha256(), 0, [], 0
        try:
            async with ch.request("/machine.MachineService/EtcdSnapshot", Cardinality.UNARY_STREAM, None, None) as st:
                await st.send_message(b"", end=True)
                async for msg in st:
                    data = msg[3:] if msg[1] & 0x80 else msg[2:]  # field 2's length: 2 varint bytes at 1 KiB
                    pending.append(data)
                    size += len(data)
                    if size >= 64 * 1024:
                        chunk = b"".join(pending)
                        pending.clear()
                        size = 0
                        h.update(chunk)
                        n += len(chunk)
                if pending:
                    chunk = b"".join(pending)
                    h.update(chunk)
                    n += len(chunk)
        finally:
            ch.close()
        return n

    t = time.process_time()
    n = asyncio.run(one())
    return n, time.process_time() - t


def own_client(host: str, port: int, ca: str, cert: str, key: str) -> tuple[int, float]:
    from dr.adapters.talosapi import TalosClient, TalosCredentials

    creds = TalosCredentials(ca_pem=Path(ca).read_bytes(), cert_pem=Path(cert).read_bytes(), key_pem=Path(key).read_bytes())
    n = [0]
    t = time.process_time()
    TalosClient(host, creds, port=port, timeout=600).etcd_snapshot(lambda b: n.__setitem__(0, n[0] + len(b)))
    return n[0], time.process_time() - t


def ensure_venv() -> Path:
    py = EVAL_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(EVAL_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "grpclib"], check=True)
    return py


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.grpclib_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256, help="MiB")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--grpclib-client", nargs=5, metavar=("HOST", "PORT", "CA", "CERT", "KEY"))
    p.add_argument("--own-client", nargs=5, metavar=("HOST", "PORT", "CA", "CERT", "KEY"))
    args = p.parse_args(argv)
    if args.grpclib_client or args.own_client:
        a = args.grpclib_client or args.own_client
        n, cpu = (grpclib_client if args.grpclib_client else own_client)(a[0], int(a[1]), *a[2:])
        print(json.dumps({"bytes": n, "cpu_s": cpu}))
        return 0

    from datetime import UTC, datetime, timedelta

    from dr.core.credentials import issue_certificate, new_ca
    from sandbox.goapid import GoApid

    py = ensure_venv()
    versions = subprocess.run([str(py), "-m", "pip", "list", "--format=json"], check=True, capture_output=True,
                              text=True).stdout
    pins = {d["name"].lower(): d["version"] for d in json.loads(versions)}
    ca = new_ca("talos")
    now = datetime.now(UTC)
    cert, key = issue_certificate(*ca, organization="os:etcd:backup", common_name="bench",
                                  not_before=now - timedelta(hours=1), not_after=now + timedelta(days=1))
    with tempfile.TemporaryDirectory(prefix="grpclib-eval-") as d:
        files = {n: Path(d) / n for n in ("ca", "cert", "key", "snap")}
        files["ca"].write_bytes(ca[0])
        files["cert"].write_bytes(cert)
        files["key"].write_bytes(key)
        body = bytearray(os.urandom(args.size * MIB))
        struct.pack_into("<I", body, 16, 0xED0CDAED)
        files["snap"].write_bytes(bytes(body) + hashlib.sha256(body).digest())
        del body
        results: dict[str, list[float]] = {"own": [], "grpclib": []}
        with GoApid(*ca, snapshot_file=files["snap"]) as g:
            target = [g.host, str(g.port), str(files["ca"]), str(files["cert"]), str(files["key"])]
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
            for _ in range(args.reps):
                for name, python, flag in (("own", sys.executable, "--own-client"), ("grpclib", str(py), "--grpclib-client")):
                    proc = subprocess.run([python, str(Path(__file__).resolve()), flag, *target], env=env,
                                          capture_output=True, text=True)
                    if proc.returncode != 0:
                        raise SystemExit(f"{name} client failed: {proc.stderr[-3000:]}")
                    out = proc.stdout
                    r = json.loads(out.strip().splitlines()[-1])
                    assert r["bytes"] == args.size * MIB + 32, r
                    results[name].append(r["cpu_s"] / (r["bytes"] / (1024 * MIB)))
                    print(f"{name}: {results[name][-1]:.2f} CPU-s/GiB", flush=True)
    summary = {"size_mib": args.size, "cpu_s_per_gib": results, "grpclib_venv": pins,
               "load": Path("/proc/loadavg").read_text().split()[:3]}
    print(json.dumps(summary, indent=2))
    out_dir = Path(__file__).resolve().parent / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "grpclib_eval.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
