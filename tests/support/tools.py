"""Helpers the tests share (not fixtures): required binaries, a real etcd on free ports, running a command
in-process. Fixtures live in tests/conftest.py and tests/support/talos_api.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from dr.adapters.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
__all__ = ["ROOT", "CliResult", "Etcd", "free_port", "require_binary", "require_etcd35", "run_cli", "start_etcd",
           "wait_port"]


def require_binary(name: str) -> str:
    """Path to ``name``; fails under CI=true (never skips there), skips elsewhere."""
    path = shutil.which(name)
    if path:
        return path
    msg = f"{name} not found on PATH: run `make etcd` (installs Debian's etcd-server and etcd-client)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg)
    pytest.skip(msg)


def require_etcd35() -> Path:
    """The etcd 3.5 bin dir that `make etcd` fills (dr.adapters.etcdlocal.etcd35_bin_dir(), env DR_ETCD35_BIN_DIR), with
    etcd, etcdctl and etcdutl; fails under CI=true (never skips there), skips elsewhere."""
    from dr.adapters.etcdlocal import etcd35_bin_dir

    d = etcd35_bin_dir()
    if all((d / n).is_file() and os.access(d / n, os.X_OK) for n in ("etcd", "etcdctl", "etcdutl")):
        return d
    msg = f"etcd 3.5 (etcd, etcdctl, etcdutl) not found in {d}: run `make etcd` (scripts/ensure-etcd35.sh)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg)
    pytest.skip(msg)


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class Etcd:
    def __init__(self, endpoint: str, data_dir: Path, proc: subprocess.Popen, etcdctl: str = "etcdctl"):
        self.endpoint = endpoint
        self.data_dir = data_dir
        self.proc = proc
        self.etcdctl = etcdctl

    def ctl(self, *args: str, input: bytes | None = None) -> bytes:
        env = {**os.environ, "ETCDCTL_API": "3"}
        return subprocess.run([self.etcdctl, "--endpoints", self.endpoint, *args], check=True, env=env,
                              capture_output=True, input=input).stdout

    def put(self, key: str, value: str) -> None:
        self.ctl("put", key, value)

    def keys(self, prefix: str = "/") -> list[str]:
        out = self.ctl("get", "--prefix", "--keys-only", prefix).decode()
        return sorted(k for k in out.splitlines() if k)

    def snapshot(self, path: Path) -> Path:
        self.ctl("snapshot", "save", str(path))
        return path


def start_etcd(base: Path, bin_dir: Path | None = None) -> Etcd:
    """A real etcd on free ports: PATH's (Debian's 3.4), or ``bin_dir``'s etcd and etcdctl (e.g. etcd 3.5)."""
    if bin_dir is None:
        etcd, etcdctl = require_binary("etcd"), require_binary("etcdctl")
    else:
        etcd, etcdctl = str(bin_dir / "etcd"), str(bin_dir / "etcdctl")
    cport, pport = free_port(), free_port()
    data = base / "data"
    log = open(base / "etcd.log", "wb")
    proc = subprocess.Popen(
        [etcd, "--name", "default", "--data-dir", str(data),
         "--listen-client-urls", f"http://127.0.0.1:{cport}", "--advertise-client-urls", f"http://127.0.0.1:{cport}",
         "--listen-peer-urls", f"http://127.0.0.1:{pport}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
         "--initial-cluster", f"default=http://127.0.0.1:{pport}"],
        stdout=log, stderr=subprocess.STDOUT)
    log.close()
    wait_port(cport)
    e = Etcd(f"http://127.0.0.1:{cport}", data, proc, etcdctl)
    # A listening port is not a ready member (leader election); on a loaded machine the first write can time out.
    deadline = time.monotonic() + 30
    while True:
        try:
            e.ctl("endpoint", "health")
            return e
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.terminate()
                raise RuntimeError(f"etcd on {e.endpoint} did not become healthy; see {base / 'etcd.log'}") from None
            time.sleep(0.2)


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out!r}, err={self.err!r})"


def run_cli(main, *argv: str, **kw) -> CliResult:
    """Run a command's ``main(argv)`` in-process, capturing exit code, stdout and stderr."""
    import io

    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err, **kw)
    return CliResult(code, out.getvalue(), err.getvalue())
