"""A throwaway local etcd, restored from a snapshot, to read a snapshot's content back (dr.verify).

``ThrowawayEtcd(snapshot)`` is a context manager: ``etcdctl snapshot restore`` into a fresh temporary directory, one
``etcd`` on free loopback ports, and on exit (normal, error or Ctrl-C) the process is killed and the directory
removed. Keys are read through etcd's gRPC gateway (``/v3/kv/range``, JSON over HTTP) in pages pinned to one
revision, so memory stays bounded by one page whatever the snapshot's size, and no etcd client library is needed.

Should this process die without running its ``finally`` (SIGKILL), etcd dies with it (Linux parent-death signal),
and the next ``ThrowawayEtcd`` removes directories whose owner process is gone.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dr.errors import CorruptSnapshot, DiskFull, EtcdError, EtcdMissing

DIR_PREFIX = "dr-throwaway-etcd-"
OWNER_FILE = "owner.pid"
# etcd preallocates a 64 MB WAL segment next to the restored database.
WAL_RESERVE = 80 * 1024 * 1024
START_TIMEOUT = 30.0
MISSING_HINT = "install etcd 3.4 (Debian: apt-get install etcd-server etcd-client, or `make etcd`) and retry"


def binaries() -> tuple[str, str]:
    """Paths of ``etcd`` and ``etcdctl``; ``EtcdMissing`` names what is missing."""
    etcd, etcdctl = shutil.which("etcd"), shutil.which("etcdctl")
    missing = [n for n, p in (("etcd", etcd), ("etcdctl", etcdctl)) if not p]
    if missing:
        raise EtcdMissing(f"{' and '.join(missing)} not found on PATH (needed to restore the snapshot into a "
                          "throwaway etcd and read it back)", MISSING_HINT)
    assert etcd and etcdctl
    return etcd, etcdctl


def _ctl_env() -> dict[str, str]:
    return {**os.environ, "ETCDCTL_API": "3"}


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    last = lines[-1]
    try:  # etcdctl 3.4 logs JSON lines; the error is the last one's "error" or "msg"
        obj = json.loads(last)
        return str(obj.get("error") or obj.get("msg") or last)
    except (ValueError, AttributeError):
        return last


def snapshot_status(path: Path, etcdctl: str | None = None, timeout: float = 300) -> dict:
    """``etcdctl snapshot status -w json``: bbolt's consistency check, then hash, revision, totalKey, totalSize.

    ``totalKey`` counts bbolt entries in every bucket (each revision of each key, plus etcd's own metadata), not the
    live keys a client sees."""
    ctl = etcdctl or binaries()[1]
    try:
        r = subprocess.run([ctl, "snapshot", "status", str(path), "-w", "json"], capture_output=True, text=True,
                           env=_ctl_env(), timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise EtcdError(f"`etcdctl snapshot status {path}` did not finish in {timeout:.0f}s",
                        "check the disk, then retry") from exc
    if r.returncode != 0:
        raise CorruptSnapshot(f"etcd cannot read {path}: {_last_line(r.stderr or r.stdout) or 'etcdctl failed'}",
                              "use another snapshot; this one's database is damaged although its trailer matches")
    try:
        return json.loads(r.stdout)
    except ValueError as exc:
        raise EtcdError(f"`etcdctl snapshot status` printed something that is not JSON: {r.stdout[:200]!r}",
                        "check that etcdctl is version 3.4 (`etcdctl version`)") from exc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(base: Path | None = None) -> list[Path]:
    """Remove throwaway directories whose owner process is gone (left by a SIGKILLed run)."""
    base = Path(base or tempfile.gettempdir())
    removed = []
    try:
        candidates = [p for p in base.iterdir() if p.name.startswith(DIR_PREFIX) and p.is_dir()]
    except OSError:
        return removed
    for d in candidates:
        try:
            pid = int((d / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            # No owner file: either being created right now or from a crash before it was written; only old ones go.
            try:
                if time.time() - d.stat().st_mtime < 3600:
                    continue
            except OSError:
                continue
            pid = 0
        if pid and _pid_alive(pid):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _die_with_parent() -> None:
    # Runs in the child before exec: etcd gets SIGKILL when the process that started it dies, so a SIGKILLed
    # `dr.verify` cannot leave an etcd behind. Linux only; elsewhere the finally block is the only cleanup.
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True)
class KV:
    key: bytes
    value: bytes | None  # None when read with keys_only
    mod_revision: int


class ThrowawayEtcd:
    """Restore ``snapshot`` into a temporary directory and run etcd on it until the ``with`` block ends."""

    def __init__(self, snapshot: Path, *, base_dir: Path | None = None, label: str | None = None):
        self.snapshot = Path(snapshot)
        self.base_dir = Path(base_dir) if base_dir else Path(tempfile.gettempdir())
        self.label = label or str(snapshot)
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""
        self.revision = 0
        self._etcd, self._etcdctl = binaries()

    @property
    def data_dir(self) -> Path:
        assert self.dir is not None
        return self.dir / "data"

    def __enter__(self) -> ThrowawayEtcd:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_space(self) -> None:
        need = self.snapshot.stat().st_size + WAL_RESERVE
        free = shutil.disk_usage(self.base_dir).free
        if free < need:
            raise DiskFull(f"{self.base_dir} has {free // 2**20} MiB free; restoring {self.label} into a throwaway "
                           f"etcd needs about {need // 2**20} MiB",
                           "free space there, or point TMPDIR at a folder with room and retry")

    def start(self) -> None:
        sweep_stale(self.base_dir)
        self._check_space()
        self.dir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=self.base_dir))
        (self.dir / OWNER_FILE).write_text(str(os.getpid()))
        last_error = ""
        for _attempt in range(3):  # a free port can be taken by someone else before etcd binds it
            peer, client = _free_port(), _free_port()
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._restore(peer)
            ok, last_error = self._run(client, peer)
            if ok:
                return
            if "address already in use" not in last_error:
                break
        raise EtcdError(f"the throwaway etcd restored from {self.label} did not start: {last_error}",
                        "run with --debug; if it persists, check `etcd --version` is 3.4 and the disk")

    def _restore(self, peer: int) -> None:
        peer_url = f"http://127.0.0.1:{peer}"
        argv = [self._etcdctl, "snapshot", "restore", str(self.snapshot), "--data-dir", str(self.data_dir),
                "--name", "verify", "--initial-cluster", f"verify={peer_url}",
                "--initial-advertise-peer-urls", peer_url]
        r = subprocess.run(argv, capture_output=True, text=True, env=_ctl_env(), timeout=600)
        if r.returncode != 0:
            msg = _last_line(r.stderr or r.stdout) or f"etcdctl exit {r.returncode}"
            if "no space left" in msg.lower():
                raise DiskFull(f"restoring {self.label} into {self.dir} failed: no space left on device",
                               "free space, or point TMPDIR at a folder with room and retry")
            if "hash mismatch" in msg.lower() or "checksum" in msg.lower():
                raise CorruptSnapshot(f"etcd refused to restore {self.label}: {msg}", "use another snapshot")
            raise EtcdError(f"`etcdctl snapshot restore` of {self.label} failed: {msg}",
                            "run with --debug; check the etcdctl version (3.4) and the disk")

    def _run(self, client: int, peer: int) -> tuple[bool, str]:
        assert self.dir is not None
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        log_path = self.dir / "etcd.log"
        argv = [self._etcd, "--name", "verify", "--data-dir", str(self.data_dir),
                "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
                "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                "--initial-cluster", f"verify={peer_url}",
                # One member on loopback: elect it at once instead of after the default 1 s timeout.
                "--heartbeat-interval", "20", "--election-timeout", "200",
                "--log-level", "error", "--logger", "zap"]
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=_die_with_parent if os.name == "posix" else None)
        self.endpoint = client_url
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False, _last_line(log_path.read_text(errors="replace")) or "etcd exited at start"
            if self._healthy():
                self.revision = self._range(b"\0", b"\0", count_only=True)[0]
                return True, ""
            time.sleep(0.05)
        self._kill()
        return False, f"no answer on {client_url} within {START_TIMEOUT:.0f}s"

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def close(self) -> None:
        """Kill etcd and remove the directory. Safe to call twice; runs to the end even when interrupted again."""
        try:
            self._kill()
        finally:
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    # --- reading -----------------------------------------------------------------------------------------------

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/health", timeout=1) as r:
                return json.loads(r.read()).get("health") in ("true", True)
        except (OSError, ValueError):
            return False

    def _range(self, key: bytes, end: bytes, **kw) -> tuple[int, dict]:
        return range_request(self.endpoint, key, end, **kw)

    def iter_kvs(self, *, keys_only: bool = True, page: int | None = None) -> Iterator[KV]:
        """Every live key in key order (values too unless ``keys_only``), read in pages at one revision."""
        return iter_kvs(self.endpoint, keys_only=keys_only, page=page, revision=self.revision)


def range_request(endpoint: str, key: bytes, end: bytes, **kw) -> tuple[int, dict]:
    """One ``/v3/kv/range`` call through etcd's gRPC gateway: (header revision, response)."""
    body = {"key": base64.b64encode(key).decode(), "range_end": base64.b64encode(end).decode(), **kw}
    req = urllib.request.Request(f"{endpoint}/v3/kv/range", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            res = json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise EtcdError(f"etcd at {endpoint} refused a read: {exc.code} {exc.read()[:200]!r}",
                        "run with --debug and report it") from exc
    except (OSError, ValueError) as exc:
        raise EtcdError(f"etcd at {endpoint} does not answer: {exc}", "run with --debug; check its log") from exc
    return int(res.get("header", {}).get("revision", 0)), res


def iter_kvs(endpoint: str, *, keys_only: bool = True, page: int | None = None, revision: int = 0) -> Iterator[KV]:
    """Every live key of the etcd at ``endpoint`` in key order (values too unless ``keys_only``), in pages pinned
    to one revision (``revision``, or the current one at the first page), so memory stays one page."""
    limit = page or (5000 if keys_only else 200)
    start = b"\0"
    rev = revision
    while True:
        body: dict = {"limit": limit, "keys_only": keys_only}
        if rev:
            body["revision"] = rev
        rev_now, res = range_request(endpoint, start, b"\0", **body)
        rev = rev or rev_now
        kvs = res.get("kvs", [])
        for kv in kvs:
            value = None if keys_only else base64.b64decode(kv.get("value", ""))
            yield KV(base64.b64decode(kv["key"]), value, int(kv.get("mod_revision", 0)))
        if not res.get("more") or not kvs:
            return
        start = base64.b64decode(kvs[-1]["key"]) + b"\0"
