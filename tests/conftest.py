"""Shared fixtures: a real S3 protocol server (moto's server mode) and a real etcd, both on loopback free ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from sandbox.procs import free_port  # noqa: F401 - the one helper (dr.adapters.ports); tests import it from here

ROOT = Path(__file__).resolve().parent.parent
# The sandbox's grpcio apid runs inside this test process; grpcio's fork handlers would then run in every child that
# subprocess forks with a preexec_fn (the throwaway etcd's parent-death signal) and can break it ("epoll_wait error:
# Bad file descriptor"). No production command imports grpc; the tests must not be flaky because one does.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server on a free loopback port for the whole session; yields its endpoint URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def aws_env(s3_server, monkeypatch):
    """Point boto3 at the loopback S3 server with dummy credentials."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server


@pytest.fixture
def s3_client(aws_env):
    from dr.adapters import s3

    return s3.make_client("us-east-1")


@pytest.fixture
def bucket(s3_client):
    """A fresh versioned bucket per test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    s3_client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


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


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory):
    """A real etcd for the session, on free loopback ports."""
    e = start_etcd(tmp_path_factory.mktemp("etcd"))
    try:
        yield e
    finally:
        e.proc.terminate()
        e.proc.wait(10)


@pytest.fixture(scope="session")
def real_snapshot(etcd_server, tmp_path_factory) -> Path:
    """A snapshot made by etcdctl itself (not this project's code) of a few Kubernetes-shaped keys."""
    for i in range(5):
        etcd_server.put(f"/registry/configmaps/default/cm-{i}", f"value-{i}")
    etcd_server.put("/registry/namespaces/default", "ns")
    path = tmp_path_factory.mktemp("snap") / "etcdctl.db"
    return etcd_server.snapshot(path)


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


@pytest.fixture
def sandbox_env(sandbox, monkeypatch, tmp_path):
    """A running sandbox with its env file applied to this process, and cwd in a fresh folder (so `.talos/` is
    the test's own)."""
    for k, v in sandbox.env.items():
        monkeypatch.setenv(k, v)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return sandbox


@pytest.fixture
def tiny_fs(tmp_path):
    """A 256 KiB tmpfs, to fill the disk for real. Needs root (as on the project's machines and CI)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        msg = f"cannot mount a tmpfs to simulate a full disk: {proc.stderr.strip()}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
