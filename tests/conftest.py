"""Shared fixtures: a real S3 protocol server (moto's server mode), a real etcd, the sandbox in a test's own folder.
Helpers (not fixtures) are in tests/support/tools.py; the Talos API fixtures in tests/support/talos_api.py."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.tools import ROOT, free_port, require_binary, start_etcd, wait_port  # noqa: F401 - fixtures use them

pytest_plugins = ("tests.support.talos_api",)  # the Talos API fixtures: os_ca, apid, sched_etcd, ...

# The sandbox's grpcio apid runs inside this test process; grpcio's fork handlers would then run in every child that
# subprocess forks with a preexec_fn (the throwaway etcd's parent-death signal) and can break it ("epoll_wait error:
# Bad file descriptor"). No production command imports grpc; the tests must not be flaky because one does.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


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


@pytest.fixture
def sandbox_env(sandbox, monkeypatch, tmp_path):
    """A running sandbox with its env file applied to this process, and cwd in a fresh folder (so `.talos/` is
    the test's own)."""
    for k, v in sandbox.env.items():
        monkeypatch.setenv(k, v)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("DR_TALOS_DIR", ".talos")  # the sandbox's env names its own; these tests read the cwd's
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
