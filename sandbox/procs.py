"""Processes the sandbox starts: detached, recorded by pid, stopped by pid (never by name)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dr.adapters.ports import free_port  # noqa: F401 - the one helper; sandbox code calls procs.free_port


def free_port_on(host: str) -> int:
    """A TCP port free on ``host`` right now (a node's private IP: a port free on 127.0.0.1 may be taken there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def spawn(argv: Sequence[str], log: Path, *, env: dict[str, str] | None = None, cwd: str | None = None) -> int:
    """Start ``argv`` in its own session (so it outlives the caller), output to ``log``; return its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=cwd,
            close_fds=True,
        )
    return proc.pid


def _reap(pid: int) -> None:
    # A process this interpreter started and that has exited stays a zombie until waited for.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    except OSError:
        pass


def alive(pid: int | None, marker: str | None = None) -> bool:
    """Whether ``pid`` runs (zombies count as dead); with ``marker``, only if its command line contains it,
    so a recycled pid is never mistaken for ours."""
    if not pid:
        return False
    _reap(pid)
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    if state in (b"Z", b"X"):
        return False
    if marker is not None:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            return False
        if marker.encode() not in cmdline:
            return False
    return True


def stop(pid: int | None, marker: str | None = None, timeout: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; returns True if a process was stopped."""
    if not alive(pid, marker):
        return False
    assert pid is not None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + 2
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return True


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def find(marker: str, *, exe: str) -> list[int]:
    """Pids of this user's processes running ``exe`` whose command line contains ``marker`` as a whole argument
    (a sandbox's etcd data directory: unique to it). Used by ``down`` to stop an etcd whose pid was never recorded."""
    out = []
    me = os.getuid()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if d.stat().st_uid != me:
                continue
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and Path(argv[0].decode(errors="replace")).name == Path(exe).name and marker.encode() in argv:
            out.append(int(d.name))
    return out
