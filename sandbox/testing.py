"""pytest helpers for any test folder that needs the sandbox.

Use the fixtures from a folder's ``conftest.py`` (tests/conftest.py belongs to someone else)::

    from sandbox.testing import sandbox, sandbox_factory  # noqa: F401  (pytest fixtures)

``sandbox_factory(name="sb", **up_kwargs)`` starts a Sandbox under ``tmp_path`` (``with_s3=False`` skips the S3
server, saving ~2 s); every sandbox it made is stopped at teardown. ``sandbox`` is one running sandbox with S3.
``require_etcd()`` skips when etcd is missing, but FAILS under ``CI=true`` so CI cannot pass by skipping.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox import etcd
from sandbox.api import Sandbox


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_etcd() -> None:
    """Skip (locally) or fail (``CI=true``) when Debian's etcd/etcdctl are not installed."""
    etcd_bin, etcdctl_bin = etcd.binaries()
    if etcd_bin and etcdctl_bin:
        return
    msg = "etcd and etcdctl are not installed (apt-get install etcd-server etcd-client, or `make etcd`)"
    if in_ci():
        pytest.fail(msg + " — required in CI")
    pytest.skip(msg)


SandboxFactory = Callable[..., Sandbox]


@pytest.fixture
def sandbox_factory(tmp_path: Path) -> Iterator[SandboxFactory]:
    """Start sandboxes under ``tmp_path``; all are stopped at teardown."""
    require_etcd()
    made: list[Sandbox] = []

    def make(name: str = "sb", **kwargs) -> Sandbox:
        kwargs.setdefault("reboot_seconds", 0.3)
        kwargs.setdefault("bootstrap_not_ready_seconds", 0.2)
        sb = Sandbox.up(tmp_path / name, **kwargs)
        made.append(sb)
        return sb

    yield make
    for sb in made:
        sb.down()


@pytest.fixture
def sandbox(sandbox_factory: SandboxFactory) -> Sandbox:
    """One running sandbox (etcd, S3, simulated node) in ``tmp_path/sb``."""
    return sandbox_factory()


@pytest.fixture
def sandbox_workdir(sandbox_factory: SandboxFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Sandbox:
    """A node-only sandbox (no S3) whose env is the test's, with the test run from an empty ``tmp_path/work``."""
    sb = sandbox_factory(with_s3=False)
    for k, v in sb.env.items():
        monkeypatch.setenv(k, v)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return sb


def talosctl(sb: Sandbox, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the sandbox's talosctl (with its env); returns the completed process."""
    return sb.talosctl_run(*args, timeout=timeout)
