"""A throwaway local etcd, restored from a snapshot, to read a snapshot's content back (dr.verify).

This module is the one place that runs local etcd tools: ``snapshot_status`` and ``restore_snapshot`` pick etcdutl,
else an etcdctl older than 3.6, and never call a snapshot damaged because a tool lacks a subcommand.

``ThrowawayEtcd(snapshot)`` is a context manager: ``snapshot restore`` into a fresh 0700 temporary directory, one
``etcd`` listening on unix sockets inside it (no TCP port: only this user can connect), and on exit (normal, error or
Ctrl-C) the process is killed and the directory removed. Keys are read through etcd's gRPC gateway
(``/v3/kv/range``, JSON over HTTP) in pages pinned to one revision, so memory stays bounded by two pages whatever the
snapshot's size, and no etcd client library is needed.

Should this process die without running its ``finally`` (SIGKILL), etcd dies with it (Linux parent-death signal),
and the next ``ThrowawayEtcd`` removes directories whose owner process is gone.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from dr.core.errors import CorruptSnapshot, DiskFull, EtcdError, EtcdMissing
from dr.core.integrity import SnapshotDigest

DIR_PREFIX = "dr-throwaway-etcd-"
OWNER_FILE = "owner.pid"
# etcd preallocates a 64 MB WAL segment next to the restored database.
WAL_RESERVE = 80 * 1024 * 1024
START_TIMEOUT = 30.0
ETCD35_BIN_DIR_ENV = "DR_ETCD35_BIN_DIR"


def etcd35_bin_dir() -> Path:
    """Where `make etcd` (scripts/ensure-etcd35.sh) unpacks Debian trixie's etcd 3.5 (etcd, etcdctl, etcdutl):
    ``$DR_ETCD35_BIN_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/talos-dr/etcd-3.5/bin``. Tests and the sandbox use
    it; dr.verify and dr.restore use whatever is on PATH."""
    env = os.environ.get(ETCD35_BIN_DIR_ENV)
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "talos-dr" / "etcd-3.5" / "bin"


def missing_hint() -> str:
    return (f"install etcdutl: `make etcd` unpacks etcd 3.5 with etcdutl into {etcd35_bin_dir()} (then put that "
            "folder first on PATH), or use Debian's etcd 3.4, whose etcdctl still has snapshot status/restore "
            "(apt-get install etcd-server etcd-client)")


# --- which local tool reads and restores a snapshot ------------------------------------------------------------
#
# etcd 3.4: `etcdctl snapshot save|status|restore`.
# etcd 3.5: status and restore moved to etcdutl; etcdctl keeps them, marked "[deprecated]"
#   (etcd-io/etcd v3.5.16 etcdctl/ctlv3/command/snapshot_command.go: `Short: "[deprecated] Gets backend snapshot
#   status of a given file"`).
# etcd 3.6 (Talos v1.13.9 runs v3.6.12): etcdctl's `snapshot` has only `save` (v3.6.12
#   etcdctl/ctlv3/command/snapshot_command.go: `cmd.AddCommand(NewSnapshotSaveCommand())`). `snapshot status F` is
#   then the non-runnable `snapshot` command with extra arguments: cobra v1.10.2 (etcdctl/go.mod) only reports
#   "unknown command" for the root command (args.go legacyArgs: `if !cmd.HasParent() && len(args) > 0`), returns
#   flag.ErrHelp for a non-runnable one (command.go: `if !c.Runnable() { return flag.ErrHelp }`), and ExecuteC turns
#   that into the help text and a nil error (`cmd.HelpFunc()(cmd, args); return cmd, nil`). etcd's help is the
#   usage template (pkg/cobrautl/help.go, written to os.Stdout): "NAME:", "USAGE:", "COMMANDS:". So 3.6's etcdctl
#   prints usage on stdout and exits 0 -- it must never count as "the database is damaged".
# etcdutl (3.5 and 3.6): `snapshot status <filename>` with the global `-w/--write-out json`, and `snapshot restore
#   <filename> --data-dir --name --initial-cluster --initial-advertise-peer-urls --skip-hash-check`, the same flags
#   as etcdctl 3.4 (v3.6.12 and v3.5.16 etcdutl/etcdutl/snapshot_command.go, etcdutl/ctl.go). Its JSON is
#   snapshot.Status: hash, revision, totalKey, totalSize (+ version in 3.6; etcdutl/snapshot/v3_snapshot.go).
# A failing status exits non-zero (cobrautl.ExitError); bbolt's own checks panic (exit 2) on damaged pages.

_VERSION = re.compile(r"^(etcdctl|etcdutl) version:\s*(\d+)\.(\d+)\.(\S+)", re.M)
_LACKS = re.compile(r"unknown command|unknown flag|unknown shorthand flag|^\s*USAGE:\s*$|^\s*COMMANDS:\s*$",
                    re.M | re.I)
_version_cache: dict[tuple[str, int], str | None] = {}


@dataclass(frozen=True)
class Tool:
    name: str  # "etcdutl" or "etcdctl"
    path: str
    version: str | None  # "3.4.23", or None when it did not say

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}" if self.version else self.name


@dataclass(frozen=True)
class SnapshotStatus:
    """``snapshot status -w json``. ``total_keys`` is etcd's ``totalKey``: bbolt entries in every bucket (each
    revision of each key, plus etcd's own metadata), not the live keys a client sees. ``tool`` is "etcdutl" or
    "etcdctl", or None when no usable tool was found (``optional=True``): then every other field is None too."""

    revision: int | None
    total_keys: int | None
    total_size: int | None = None
    hash: int | None = None
    tool: str | None = None
    tool_version: str | None = None

    @property
    def command(self) -> str:
        return f"{self.tool} snapshot status" if self.tool else ""


class _Lacks(Exception):
    """The tool has no such subcommand (etcd 3.6's etcdctl), or printed something that is not its answer."""


def _ctl_env() -> dict[str, str]:
    return {**os.environ, "ETCDCTL_API": "3"}


def _error_line(text: str) -> str:
    """The line that says what went wrong: Go's ``panic:`` or cobra's ``Error:`` line, else the last one."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    for ln in lines:
        if ln.startswith(("panic:", "Error:", "fatal error:")):
            return ln
    last = lines[-1]
    try:  # etcdctl 3.4 logs JSON lines; the error is the last one's "error" or "msg"
        obj = json.loads(last)
        return str(obj.get("error") or obj.get("msg") or last)
    except (ValueError, AttributeError):
        return last


def tool_version(exe: str) -> str | None:
    """``<tool> version``'s "etcdctl version: 3.4.23" (cached per file); None when it does not say."""
    try:
        key = (exe, os.stat(exe).st_mtime_ns)
    except OSError:
        return None
    if key not in _version_cache:
        try:
            r = subprocess.run([exe, "version"], capture_output=True, text=True, env=_ctl_env(), timeout=30)
            m = _VERSION.search(r.stdout)
            _version_cache[key] = f"{m.group(2)}.{m.group(3)}.{m.group(4)}" if m and r.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired):
            _version_cache[key] = None
    return _version_cache[key]


def _major_minor(version: str | None) -> tuple[int, int] | None:
    try:
        major, minor = (version or "").split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def snapshot_tools(path: str | None = None) -> tuple[list[Tool], list[str]]:
    """The tools that can run ``snapshot status``/``restore``, best first, and why others cannot.

    etcdutl first whenever it is there; etcdctl only when it says it is older than 3.6 (3.6 removed both
    subcommands). ``path`` is a PATH-style search list (default: PATH)."""
    tools, refused = [], []
    utl = shutil.which("etcdutl", path=path)
    if utl:
        tools.append(Tool("etcdutl", utl, tool_version(utl)))
    ctl = shutil.which("etcdctl", path=path)
    if ctl:
        version = tool_version(ctl)
        mm = _major_minor(version)
        if mm is not None and mm < (3, 6):
            tools.append(Tool("etcdctl", ctl, version))
        elif mm is None:
            refused.append(f"etcdctl at {ctl} does not say its version, so it cannot be trusted to have "
                           "`snapshot status`/`restore`")
        else:
            refused.append(f"etcdctl {version} at {ctl} has no `snapshot status`/`restore` (etcd 3.6 moved them "
                           "to etcdutl)")
    if not utl:
        refused.insert(0, "etcdutl is not on PATH" if path is None else f"etcdutl is not in {path}")
    if not ctl and not utl:
        refused.append("etcdctl is not on PATH either" if path is None else f"etcdctl is not in {path} either")
    return tools, refused


def _missing(what: str, refused: list[str]) -> EtcdMissing:
    return EtcdMissing(f"no local tool can run `snapshot {what}`: {'; '.join(refused)}", missing_hint())


def _status_with(tool: Tool, path: Path, timeout: float) -> SnapshotStatus:
    argv = [tool.path, "snapshot", "status", str(path), "-w", "json"]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, env=_ctl_env(), timeout=timeout)
    except OSError as exc:
        raise _Lacks(f"{tool.path} does not run: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise EtcdError(f"`{tool.name} snapshot status {path}` did not finish in {timeout:.0f}s",
                        "check the disk, then retry") from exc
    if r.returncode == 0:
        try:
            doc = json.loads(r.stdout)
            return SnapshotStatus(int(doc["revision"]), int(doc["totalKey"]), int(doc.get("totalSize", 0)),
                                  int(doc.get("hash", 0)), tool.name, tool.version)
        except (ValueError, KeyError, TypeError) as exc:
            # 3.6's etcdctl prints the `snapshot` usage and exits 0 (see above): not an answer about the file.
            first = (r.stdout.strip().splitlines() or [""])[0]
            raise _Lacks(f"`{tool.name} snapshot status` exited 0 without a JSON answer ({first[:80]!r})") from exc
    text = f"{r.stderr}\n{r.stdout}"
    if _LACKS.search(text):
        raise _Lacks(f"`{tool.name} snapshot status` is not a command there: {_error_line(text)}")
    raise CorruptSnapshot(f"etcd cannot read {path}: `{tool.name} snapshot status` says "
                          f"{_error_line(text) or f'exit {r.returncode}'}",
                          "use another snapshot; this one's database is damaged although its trailer matches")


def snapshot_status(path: Path, *, optional: bool = False, search_path: str | None = None,
                    timeout: float = 300) -> SnapshotStatus:
    """``snapshot status -w json`` (bbolt's consistency check, then hash, revision, totalKey, totalSize) with the
    best local tool: etcdutl, else an etcdctl older than 3.6.

    Only a tool that has the subcommand and fails on the file raises ``CorruptSnapshot``. A tool that lacks it
    (etcd 3.6's etcdctl) is skipped. With no usable tool: ``EtcdMissing``, or with ``optional=True`` a status whose
    ``tool`` is None (so is a tool that hangs, then)."""
    tools, refused = snapshot_tools(search_path)
    for tool in tools:
        try:
            return _status_with(tool, Path(path), timeout)
        except _Lacks as exc:
            refused.append(str(exc))
        except EtcdError:
            if not optional:
                raise
            refused.append(f"{tool.name} did not finish")
    if optional:
        return SnapshotStatus(None, None)
    raise _missing("status", refused)


def bump_tool(search_path: str | None = None) -> Tool | None:
    """The etcdutl that can `snapshot restore --bump-revision N --mark-compacted` (etcd-io/etcd#16029, in etcdutl
    3.5.16 and 3.6.12: etcdutl/etcdutl/snapshot_command.go), or None. etcdctl never has these flags."""
    tools, _ = snapshot_tools(search_path)
    for tool in tools:
        if tool.name != "etcdutl":
            continue
        key = (tool.path + "#bump", 0)
        if key not in _version_cache:
            try:
                r = subprocess.run([tool.path, "snapshot", "restore", "--help"], capture_output=True, text=True,
                                   env=_ctl_env(), timeout=30)
                _version_cache[key] = "yes" if "--bump-revision" in r.stdout + r.stderr and "--mark-compacted" in (
                    r.stdout + r.stderr) else None
            except (OSError, subprocess.TimeoutExpired):
                _version_cache[key] = None
        if _version_cache[key]:
            return tool
    return None


def restore_snapshot(snapshot: Path, data_dir: Path, name: str, peer_url: str, *, skip_hash_check: bool = False,
                     search_path: str | None = None, timeout: float = 600, label: str | None = None,
                     bump_revision: int = 0) -> Tool:
    """``snapshot restore`` of ``snapshot`` into ``data_dir`` (which must not exist) as a one-member cluster, with
    the best local tool (etcdutl, else an etcdctl older than 3.6); returns the tool used.

    Raises ``CorruptSnapshot`` (hash mismatch), ``DiskFull``, ``EtcdMissing`` (no tool has the subcommand) or
    ``EtcdError``. ``data_dir`` is removed again after a failure."""
    label = label or str(snapshot)
    tools, refused = snapshot_tools(search_path)
    if bump_revision:
        bumper = bump_tool(search_path)
        tools = [bumper] if bumper is not None else []
        refused = ["no etcdutl with `snapshot restore --bump-revision --mark-compacted` (etcd 3.5.10 or later)"]
    for tool in tools:
        argv = [tool.path, "snapshot", "restore", str(snapshot), "--data-dir", str(data_dir), "--name", name,
                "--initial-cluster", f"{name}={peer_url}", "--initial-advertise-peer-urls", peer_url]
        if skip_hash_check:
            argv.append("--skip-hash-check")
        if bump_revision:
            argv += ["--bump-revision", str(bump_revision), "--mark-compacted"]
        try:
            r = subprocess.run(argv, capture_output=True, text=True, env=_ctl_env(), timeout=timeout)
        except OSError as exc:
            refused.append(f"{tool.path} does not run: {exc}")
            continue
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(data_dir, ignore_errors=True)
            raise EtcdError(f"`{tool.name} snapshot restore` of {label} did not finish in {timeout:.0f}s",
                            "check the disk, then retry") from exc
        text = f"{r.stderr}\n{r.stdout}"
        if r.returncode == 0 and (Path(data_dir) / "member").is_dir():
            return tool
        shutil.rmtree(data_dir, ignore_errors=True)
        if r.returncode == 0 or _LACKS.search(text):  # 3.6's etcdctl: usage, exit 0, nothing restored
            refused.append(f"`{tool.name} snapshot restore` is not a command there ({_error_line(text)[:80]!r})")
            continue
        msg = _error_line(text) or f"{tool.name} exit {r.returncode}"
        low = msg.lower()
        if "no space left" in low:
            raise DiskFull(f"restoring {label} into {data_dir} failed: no space left on device",
                           "free space, or point TMPDIR at a folder with room and retry")
        if "expected sha256" in low or "hash mismatch" in low or "checksum" in low or "missing hash" in low:
            raise CorruptSnapshot(f"etcd refused to restore {label}: {msg}", "use another snapshot")
        raise EtcdError(f"`{tool.name} snapshot restore` of {label} failed: {msg}",
                        f"run with --debug; check the disk and `{tool.path} version`")
    raise _missing("restore", refused)


class Tools(NamedTuple):
    etcd: str
    restorer: Tool  # etcdutl, or an etcdctl older than 3.6


def binaries(search_path: str | None = None) -> Tools:
    """``etcd`` and the tool that restores a snapshot (etcdutl, else an etcdctl that still has ``snapshot
    restore``); ``EtcdMissing`` names everything that is missing."""
    etcd = shutil.which("etcd", path=search_path)
    tools, refused = snapshot_tools(search_path)
    where = "on PATH" if search_path is None else f"in {search_path}"
    if not etcd and not tools and not any(shutil.which(n, path=search_path) for n in ("etcdutl", "etcdctl")):
        problems = [f"etcd, etcdutl and etcdctl not found {where}"]
    else:
        problems = [] if etcd else [f"etcd not found {where}"]
        if not tools:
            problems.append("no etcdutl, and no etcdctl with `snapshot restore` (" + "; ".join(refused) + ")")
    if problems:
        raise EtcdMissing(f"{' and '.join(problems)}: needed to restore the snapshot into a throwaway etcd and "
                          "read it back", missing_hint())
    assert etcd
    return Tools(etcd, tools[0])


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
    removed: list[Path] = []
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


# --- where the throwaway etcd listens (security.md M2) ---------------------------------------------------------
#
# Both listeners are unix sockets inside the throwaway's 0700 folder, so only this user (and root) can reach them:
# no TCP port for `ps` to reveal, and connect() on a unix socket needs search permission on every folder of its path
# (unix(7): "connecting to a stream socket requires write permission on the socket, and search permission on each
# directory in the path"). etcd takes `unix://HOST:PORT` for both flags and listens on HOST + PATH as a path relative
# to its working directory: v3.4.23 embed/etcd.go configureClientListeners (`if u.Scheme == "unix" || u.Scheme ==
# "unixs" { network = "unix"; addr = u.Host + u.Path }`) and rafthttp.NewListener -> transport.NewListener(u.Host,
# u.Scheme) for the peer one (pkg/transport/listener.go: `if scheme == "unix" || scheme == "unixs"`). 3.4's URL
# check insists on "host:port" and no path (v3.4.23 pkg/types/urls.go NewURLs: `URL address does not have the form
# "host:port"`, `URL must not contain a path`); 3.5 accepts any unix URL (v3.5.16 client/pkg/types/urls.go: `case
# "unix", "unixs": break`). Hence the relative `unix://client.sock:0` (a file named "client.sock:0") with etcd's cwd
# set to the folder: the same spelling works for 3.4, 3.5 and 3.6, and sun_path's 108-byte limit never bites etcd.
# The gRPC gateway behind /v3/kv/range dials the gRPC server over the same unix socket (v3.4.23 embed/serve.go
# registerGateway: `if network := sctx.network; network == "unix" { addr = fmt.Sprintf("%s://%s", network, addr) }`).
CLIENT_SOCKET = "client.sock:0"
PEER_SOCKET = "peer.sock:0"
CLIENT_URL = f"unix://{CLIENT_SOCKET}"
PEER_URL = f"unix://{PEER_SOCKET}"
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes on Linux, NUL included

# Reading back: one keys-only page makes etcd read every value of the page from bbolt (v3.5.16
# server/mvcc/kvstore_txn.go rangeKeys unmarshals whole KeyValues; keys_only only drops them from the reply), and
# each page walks the index from its first key to the end of the range (v3.5.16 server/mvcc/index.go Revisions:
# `ti.visit(key, end, ...)` returns true for every key, to count `total++`; v3.4.23 mvcc/index.go Revisions collects
# every revision of the range and the caller cuts it to the limit), so n keys in pages of p cost n²/2p index visits
# (0.7 µs each with 3.4, 0.2 µs with 3.5 here). Pages are sized by bytes instead of keys: about
# PAGE_VALUE_BYTES of values each (the snapshot's size over its key count is each key's share), between PAGE_MIN and
# PAGE_MAX keys; PAGE_MAX keeps one page's reply (and so this process's memory) to a few MiB.
PAGE_VALUE_BYTES = 64 * 1024 * 1024  # keys only: what etcd reads and holds for one page
PAGE_VALUE_BYTES_WITH_VALUES = 8 * 1024 * 1024  # values too: base64 in JSON, held here while a page is decoded
PAGE_MIN = 16
PAGE_MAX = 20000


class ThrowawayEtcd:
    """Restore ``snapshot`` into a temporary directory and run etcd on it until the ``with`` block ends.

    etcd listens on unix sockets inside that 0700 directory only (see CLIENT_URL); ``endpoint`` is
    ``unix:<path of the client socket>``. ``checked`` is what dr.core.integrity learned when it checked this file's
    SHA-256 trailer: with it, the restore skips etcd's own identical check (see ``_restore``)."""

    def __init__(self, snapshot: Path, *, base_dir: Path | None = None, label: str | None = None,
                 checked: SnapshotDigest | None = None, raw: bool = False, bump_revision: int = 0):
        self.snapshot = Path(snapshot)
        self.base_dir = Path(base_dir) if base_dir else Path(tempfile.gettempdir())
        self.label = label or str(snapshot)
        self.checked = checked
        self.raw = raw  # a data-dir copy (member/snap/db): no hash to check (`--skip-hash-check`, as etcd requires)
        self.bump_revision = bump_revision  # restored with --bump-revision N --mark-compacted (see save_snapshot)
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""
        self.revision = 0
        self.count = 0  # live keys at ``revision``
        self._etcd = binaries().etcd
        self._dir_fd: int | None = None
        self.tool: Tool | None = None  # what restored it
        self.skipped_hash_check = False

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
        self.dir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=self.base_dir))  # mkdtemp: mode 0700
        (self.dir / OWNER_FILE).write_text(str(os.getpid()))
        self._restore()
        ok, last_error = self._run()
        if not ok:
            raise EtcdError(f"the throwaway etcd restored from {self.label} did not start: {last_error}",
                            "run with --debug; if it persists, check `etcd --version` and the disk")

    def _trailer_unchanged(self) -> bool:
        """The file still has the size and SHA-256 trailer that ``checked`` saw (it was not replaced since)."""
        if self.checked is None:
            return False
        try:
            with open(self.snapshot, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size != self.checked.size or size < 32:
                    return False
                f.seek(size - 32)
                return f.read(32).hex() == self.checked.content_sha256
        except OSError:
            return False

    def _restore(self) -> None:
        # `snapshot restore` copies the file into the data dir and, unless --skip-hash-check, hashes that copy with
        # SHA-256 and compares it with the 32-byte trailer (v3.5.16 etcdutl/snapshot/v3_snapshot.go
        # copyAndVerifyDB: `if hasHash && !s.skipHashCheck { h := sha256.New() ... }`; v3.4.23
        # clientv3/snapshot/v3_snapshot.go saveDB the same). That is exactly the check dr.core.integrity already
        # made on this file (TrailerHasher: SHA-256 of everything before the trailer == the trailer), so when the
        # caller passes its result and the file still ends in that trailer with that size, etcd's second pass is
        # skipped: 1.2 s (3.5) to 3.2 s (3.4) per GiB here. Without ``checked`` etcd checks, as before.
        assert self.dir is not None
        self.skipped_hash_check = self.raw or self._trailer_unchanged()
        self.tool = restore_snapshot(self.snapshot, self.data_dir, "verify", PEER_URL, label=self.label,
                                     skip_hash_check=self.skipped_hash_check, bump_revision=self.bump_revision)

    def _socket_path(self) -> str:
        """The client socket's path for connect(): absolute when it fits in sun_path, else through an O_PATH
        descriptor of the folder (/proc/self/fd/N/...), which any length of --tmp-dir fits."""
        assert self.dir is not None
        path = str(self.dir / CLIENT_SOCKET)
        if len(os.fsencode(path)) <= SUN_PATH_MAX:
            return path
        if self._dir_fd is None:
            self._dir_fd = os.open(self.dir, os.O_PATH | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._dir_fd}/{CLIENT_SOCKET}"

    def _run(self) -> tuple[bool, str]:
        assert self.dir is not None
        log_path = self.dir / "etcd.log"
        argv = [self._etcd, "--name", "verify", "--data-dir", str(self.data_dir),
                "--listen-client-urls", CLIENT_URL, "--advertise-client-urls", CLIENT_URL,
                "--listen-peer-urls", PEER_URL, "--initial-advertise-peer-urls", PEER_URL,
                "--initial-cluster", f"verify={PEER_URL}",
                # One member on loopback: elect it at once instead of after the default 1 s timeout.
                "--heartbeat-interval", "20", "--election-timeout", "200",
                # No NOSPACE alarm for a snapshot bigger than the 2 GiB default quota (reads would still work, but
                # /health would say false); 8 GiB is etcd's suggested maximum (v3.5.16 server/etcdserver/quota.go
                # MaxQuotaBytes).
                "--quota-backend-bytes", str(8 * 1024**3),
                "--log-level", "error", "--logger", "zap"]
        with open(log_path, "ab") as log:
            # cwd: the unix socket URLs are relative to it (see CLIENT_URL). GOGC=200: etcd's start re-reads every
            # revision into its index (mvcc restore) and each page of reads unmarshals whole values; half as many
            # garbage collections for a process that lives seconds.
            self.proc = subprocess.Popen(argv, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env={**os.environ, "GOGC": "200"},
                                         preexec_fn=_die_with_parent if os.name == "posix" else None)
        self.endpoint = f"unix:{self._socket_path()}"
        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False, _error_line(log_path.read_text(errors="replace")) or "etcd exited at start"
            try:
                # A linearizable count answers once a leader is elected and the restored store is open: it is the
                # readiness check and the snapshot's revision at once.
                self.revision, res = self._range(b"\0", b"\0", count_only=True)
                self.count = int(res.get("count", 0))
                return True, ""
            except EtcdError as exc:
                last = str(exc)
            time.sleep(0.02)
        self._kill()
        return False, f"no answer on {self.endpoint} within {START_TIMEOUT:.0f}s ({last})"

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            # SIGKILL, not a graceful stop: nothing of a throwaway etcd is kept, and its orderly shutdown (closing
            # the backend, the WAL) costs 0.3 s.
            proc.kill()
            proc.wait(10)

    def close(self) -> None:
        """Kill etcd and remove the directory. Safe to call twice; runs to the end even when interrupted again."""
        try:
            self._kill()
        finally:
            if self._dir_fd is not None:
                os.close(self._dir_fd)
                self._dir_fd = None
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    # --- reading -----------------------------------------------------------------------------------------------

    def _range(self, key: bytes, end: bytes, **kw) -> tuple[int, dict]:
        return range_request(self.endpoint, key, end, **kw)

    def save_snapshot(self, dest: Path) -> SnapshotDigest:
        """A snapshot of this etcd at ``dest`` (0600, atomic), taken as `etcdctl snapshot save` takes one: etcd's
        Maintenance.Snapshot stream, here through the gRPC gateway (``POST /v3/maintenance/snapshot``, one JSON
        message per line), which ends with the SHA-256 of the database (etcd v3.5.16 server/etcdserver/api/v3rpc/
        maintenance.go Snapshot: "send sha256 checksum at the end"); the trailer is checked before ``dest`` exists."""
        from dr.adapters.fsutil import atomic_writer
        from dr.core.integrity import TrailerHasher

        hasher = TrailerHasher(f"the snapshot of the throwaway etcd restored from {self.label}")
        gw = _Gateway(self.endpoint, timeout=600)
        try:
            gw.conn.request("POST", "/v3/maintenance/snapshot", body=b"{}",
                            headers={"Content-Type": "application/json"})
            r = gw.conn.getresponse()
            if r.status != 200:
                raise EtcdError(f"etcd at {self.endpoint} refused a snapshot: {r.status} {r.read(200)!r}",
                                "run with --debug and report it")
            with atomic_writer(dest, mode=0o600, overwrite=False) as f:
                while True:
                    line = r.readline()
                    if not line:
                        break
                    try:
                        msg = json.loads(line)
                    except ValueError as exc:
                        raise EtcdError(f"etcd's snapshot stream sent no JSON: {line[:200]!r}",
                                        "run with --debug and report it") from exc
                    if "error" in msg:
                        raise EtcdError(f"etcd's snapshot stream failed: {msg['error']}", "run with --debug")
                    blob = base64.b64decode(msg.get("result", {}).get("blob", ""))
                    hasher.update(blob)
                    f.write(blob)
                digest = hasher.finish()
        finally:
            gw.close()
        return digest

    def page_size(self, keys_only: bool) -> int:
        """Keys per page for this snapshot: about PAGE_VALUE_BYTES (or PAGE_VALUE_BYTES_WITH_VALUES) of values."""
        per_key = self.snapshot.stat().st_size / max(self.count, 1)
        target = PAGE_VALUE_BYTES if keys_only else PAGE_VALUE_BYTES_WITH_VALUES
        return max(PAGE_MIN, min(PAGE_MAX, int(target / per_key)))

    def iter_kvs(self, *, keys_only: bool = True, page: int | None = None) -> Iterator[KV]:
        """Every live key in key order (values too unless ``keys_only``), read in pages at one revision."""
        return iter_kvs(self.endpoint, keys_only=keys_only, page=page or self.page_size(keys_only),
                        revision=self.revision)


class _Gateway:
    """One keep-alive HTTP/1.1 connection to etcd's gRPC gateway: ``http://host:port`` or ``unix:/path/of/socket``.
    http.client, not urllib: urllib opens a connection per request and has no unix sockets."""

    def __init__(self, endpoint: str, timeout: float = 60):
        import http.client  # here, not at the top: the sandbox's talosctl imports this module and starts faster
        import socket
        import urllib.parse

        self.endpoint = endpoint
        if endpoint.startswith("unix:"):
            path = endpoint[len("unix:"):]

            class UnixConnection(http.client.HTTPConnection):
                def connect(self) -> None:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        s.settimeout(timeout)
                        s.connect(path)
                    except BaseException:
                        s.close()
                        raise
                    self.sock = s

            self.conn: http.client.HTTPConnection = UnixConnection("localhost", timeout=timeout)
        else:
            u = urllib.parse.urlsplit(endpoint)
            self.conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 2379, timeout=timeout)

    def post(self, path: str, body: dict) -> dict:
        import http.client

        data = json.dumps(body).encode()
        for attempt in (1, 2):  # a kept-alive connection the server closed in between: once more on a fresh one
            try:
                self.conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
                r = self.conn.getresponse()
                payload = r.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.conn.close()
                if attempt == 2:
                    raise EtcdError(f"etcd at {self.endpoint} does not answer: {exc}",
                                    "run with --debug; check its log") from exc
                continue
            except (OSError, http.client.HTTPException) as exc:
                self.conn.close()
                raise EtcdError(f"etcd at {self.endpoint} does not answer: {exc}",
                                "run with --debug; check its log") from exc
            if r.status != 200:
                raise EtcdError(f"etcd at {self.endpoint} refused a read: {r.status} {payload[:200]!r}",
                                "run with --debug and report it")
            try:
                return json.loads(payload or b"{}")
            except ValueError as exc:
                raise EtcdError(f"etcd at {self.endpoint} sent no JSON: {payload[:200]!r}",
                                "run with --debug and report it") from exc
        raise AssertionError("unreachable")

    def range(self, key: bytes, end: bytes, **kw) -> tuple[int, dict]:
        body = {"key": base64.b64encode(key).decode(), "range_end": base64.b64encode(end).decode(), **kw}
        res = self.post("/v3/kv/range", body)
        return int(res.get("header", {}).get("revision", 0)), res

    def close(self) -> None:
        self.conn.close()


def range_request(endpoint: str, key: bytes, end: bytes, **kw) -> tuple[int, dict]:
    """One ``/v3/kv/range`` call through etcd's gRPC gateway at ``endpoint`` (``http://host:port`` or
    ``unix:/path``): (header revision, response)."""
    gw = _Gateway(endpoint)
    try:
        return gw.range(key, end, **kw)
    finally:
        gw.close()


def iter_kvs(endpoint: str, *, keys_only: bool = True, page: int | None = None, revision: int = 0) -> Iterator[KV]:
    """Every live key of the etcd at ``endpoint`` in key order (values too unless ``keys_only``), in pages pinned
    to one revision (``revision``, or the current one at the first page).

    One connection, and the next page is asked for as soon as this one's last key is known: etcd reads page n+1
    while this process decodes and counts page n (2 cores: about halves the time). Memory stays two pages."""
    from concurrent.futures import ThreadPoolExecutor

    limit = page or (5000 if keys_only else 200)
    gw = _Gateway(endpoint)
    rev = revision

    def fetch(start: bytes) -> tuple[int, list[dict], bool]:
        body: dict = {"limit": limit, "keys_only": keys_only}
        if rev:
            body["revision"] = rev
        rev_now, res = gw.range(start, b"\0", **body)
        kvs = res.get("kvs", [])
        return rev_now, kvs, bool(res.get("more")) and bool(kvs)

    try:
        with ThreadPoolExecutor(1, thread_name_prefix="etcd-pages") as pool:
            rev_now, kvs, more = fetch(b"\0")
            rev = rev or rev_now
            while True:
                nxt = pool.submit(fetch, base64.b64decode(kvs[-1]["key"]) + b"\0") if more else None
                b64 = base64.b64decode
                if keys_only:
                    for kv in kvs:
                        yield KV(b64(kv["key"]), None, int(kv.get("mod_revision", 0)))
                else:
                    for kv in kvs:
                        yield KV(b64(kv["key"]), b64(kv.get("value", "")), int(kv.get("mod_revision", 0)))
                if nxt is None:
                    return
                _, kvs, more = nxt.result()
    finally:
        gw.close()
