"""Fixtures for the fault suite: a dedicated S3 server per test (so it can be killed), a fault proxy in front of it,
and a node-only sandbox whose DR settings point at them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from dr.adapters import s3
from sandbox.api import Sandbox
from sandbox.testing import sandbox, sandbox_factory, sandbox_workdir  # noqa: F401  (pytest fixtures)
from tests.faults.s3proxy import FaultProxy
from tests.support.tools import ROOT, free_port, wait_port

MIB = 1024 * 1024


class MotoServer:
    def __init__(self, log: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT)
        wait_port(self.port)

    def kill(self) -> None:
        """SIGKILL: the server dies with whatever it was doing (its in-memory state goes with it)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def moto_server(tmp_path):
    m = MotoServer(tmp_path / "moto.log")
    yield m
    m.stop()


@pytest.fixture
def proxy(moto_server):
    p = FaultProxy(moto_server.port)
    yield p
    p.close()


@dataclass
class Env:
    sb: Sandbox
    bucket: str
    client: object  # straight to the S3 server, not through the proxy
    proxy: FaultProxy
    moto: MotoServer
    env: dict  # for subprocesses
    work: Path

    def objects(self) -> list[str]:
        """Snapshot objects (every version), without the ``<prefix>latest`` alias the store pins on each put."""
        return [v["Key"] for v in self.client.list_object_versions(Bucket=self.bucket).get("Versions", [])
                if not v["Key"].endswith("/" + s3.LATEST_NAME)]

    def pending(self) -> list[str]:
        return [u["Key"] for u in self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])]


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def node(sandbox_factory) -> Sandbox:  # noqa: F811
    """A node-only sandbox (no S3 server of its own: tests bring a dedicated one)."""
    return sandbox_factory(with_s3=False)


@pytest.fixture
def dr_env(node, moto_server, proxy, monkeypatch, tmp_path) -> Env:
    """This process and ``Env.env`` (for subprocesses) point the DR commands at ``node`` and, through the proxy, at
    a fresh versioned bucket on the dedicated S3 server. cwd is an empty folder (its own ``.talos/``)."""
    bucket = f"faults-{uuid.uuid4().hex[:10]}"
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    direct = s3.make_client("us-east-1", endpoint_url=moto_server.endpoint)
    direct.create_bucket(Bucket=bucket)
    direct.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    env = dict(node.env)
    env.update(S3_ENV)
    env.update({"AWS_ENDPOINT_URL_S3": proxy.endpoint, "DR_BUCKET": bucket, "PYTHONPATH": str(ROOT),
                "DR_TALOS_DIR": ".talos"})  # the cwd's own .talos/ (the sandbox's env names the sandbox's)
    env.pop("AWS_PROFILE", None)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return Env(node, bucket, direct, proxy, moto_server, env, work)


def grow(sb: Sandbox, mib: int) -> None:
    """Add ``mib`` MB of incompressible values to the node's etcd (snapshots above 8 MiB upload in parts)."""
    for i in range(mib):
        sb.put(f"/registry/configmaps/bulk/cm-{i:04d}", os.urandom(1_000_000))


def partials(*roots: Path) -> list[Path]:
    """Every ``*.part`` file left under ``roots``."""
    out = []
    for r in roots:
        if r.exists():
            out += [p for p in r.rglob("*.part")]
    return out


def put_single_part(client, bucket: str, key: str, path: Path) -> None:
    """Store a snapshot as one PUT with a full-object SHA-256, as dr.backup records a small one."""
    data = path.read_bytes()
    client.put_object(Bucket=bucket, Key=key, Body=data, ChecksumAlgorithm="SHA256",
                      Metadata={s3.META_SHA256: data[-32:].hex(), s3.META_SIZE: str(len(data)),
                                s3.META_TAKEN_AT: "2026-01-01T00:00:00Z", s3.META_CLUSTER: "talos-sandbox"})


def run_module(module: str, *args: str, env: dict, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
