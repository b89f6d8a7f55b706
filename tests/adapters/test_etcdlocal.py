"""dr.verify and dr.adapters.etcdlocal across etcd versions, with real binaries: Debian bookworm's 3.4 (PATH), trixie's 3.5
(`make etcd` unpacks it: etcdlocal.etcd35_bin_dir()), and a "3.6-like" etcdctl.

The 3.6 stand-in is a shim around the real etcdctl that lacks only `snapshot status` and `snapshot restore`, as
etcd v3.6.12's etcdctl does (etcdctl/ctlv3/command/snapshot_command.go adds only `save`). What 3.6 prints then was
read from the source, not run: the `snapshot` command is not runnable, cobra v1.10.2 returns flag.ErrHelp for it
and prints its help (etcd's usage template, pkg/cobrautl/help.go) on stdout with exit 0 ("help"). Two variants guard
against other readings: "error" (cobra's `Error: unknown command` and exit 1, as for an unknown root command), and
"lying" (usage and exit 0, but `etcdctl version` says 3.4, so only the output tells)."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import socket
import stat
from pathlib import Path

import pytest

from dr.adapters import etcdlocal
from dr.commands import verify
from dr.core.errors import CorruptSnapshot, EtcdMissing, ExitCode
from dr.core.integrity import verify_file
from tests.support.tools import require_binary, require_etcd35, run_cli, start_etcd

pytestmark = pytest.mark.slow  # the module's fixture starts three etcds (~2 s); most tests use it

KEYS = {f"/registry/configmaps/default/cm-{i}": f"v{i}" for i in range(4)} | {"/registry/namespaces/default": "ns"}

SNAPSHOT_HELP = """NAME:
  snapshot - Manages etcd node snapshots

USAGE:
  etcdctl snapshot <subcommand> [flags]

API VERSION:
  3.6

COMMANDS:
  save\tStores an etcd node backend snapshot to a given file

GLOBAL OPTIONS:
  -w, --write-out="simple"\tset the output format (fields, json, protobuf, simple, table)
"""


def _shim(folder: Path, mode: str, real: str | None = None) -> Path:
    """``folder/etcdctl``: the real etcdctl (3.4) except `snapshot status|restore` and, unless "lying", `version`."""
    real = real or require_binary("etcdctl")
    folder.mkdir(parents=True, exist_ok=True)
    if mode == "error":
        lacks = 'echo "Error: unknown command \\"$2\\" for \\"etcdctl snapshot\\"" >&2\n  exit 1'
    else:
        lacks = f"cat <<'EOF'\n{SNAPSHOT_HELP}EOF\n  exit 0"
    version = "" if mode == "lying" else (
        'if [ "$1" = version ]; then echo "etcdctl version: 3.6.12"; echo "API version: 3.6"; exit 0; fi\n')
    shim = folder / "etcdctl"
    shim.write_text(f'#!/bin/sh\n# a stand-in for etcd 3.6\'s etcdctl ({mode})\n{version}'
                    f'if [ "$1" = snapshot ] && {{ [ "$2" = status ] || [ "$2" = restore ]; }}; then\n  {lacks}\nfi\n'
                    f'exec "{real}" "$@"\n')
    shim.chmod(0o755)
    return folder


def _only(folder: Path, **tools: str) -> Path:
    """A folder holding just the named programs (symlinks)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, target in tools.items():
        (folder / name).symlink_to(target)
    return folder


def _damage(snapshot: Path, dest: Path) -> Path:
    """The same bbolt meta pages, every other page random, and a valid SHA-256 trailer."""
    data = bytearray(snapshot.read_bytes()[:-32])
    rnd = random.Random(7)
    data[8192:] = bytes(rnd.randrange(256) for _ in range(len(data) - 8192))
    dest.write_bytes(bytes(data) + hashlib.sha256(bytes(data)).digest())
    return dest


def _take(base: Path, bin_dir: Path | None, keys: dict[str, str]) -> Path:
    base.mkdir()
    e = start_etcd(base, bin_dir)
    try:
        for k, v in keys.items():
            e.put(k, v)
        return e.snapshot(base / "snap.db")
    finally:
        e.proc.terminate()
        e.proc.wait(10)


@pytest.fixture(scope="module")
def snaps(tmp_path_factory):
    """Snapshots taken by etcd 3.4 and by etcd 3.5 (their own etcdctl), damaged copies, and an empty etcd's."""
    bin35 = require_etcd35()
    base = tmp_path_factory.mktemp("etcd-versions")
    s34 = _take(base / "e34", None, KEYS)
    s35 = _take(base / "e35", bin35, KEYS)
    return {"3.4": s34, "3.5": s35, "damaged-3.4": _damage(s34, base / "damaged-3.4.db"),
            "damaged-3.5": _damage(s35, base / "damaged-3.5.db"), "empty": _take(base / "empty", None, {})}


@pytest.fixture
def tools(tmp_path, monkeypatch):
    """``tools(kind)`` puts one tool set first on PATH: "3.4" (PATH as it is: Debian's etcd, etcdctl 3.4), "3.5"
    (the 3.5 bin dir first), "3.6+etcdutl" / "3.6" (the 3.6-like etcdctl, with or without 3.5's etcd and etcdutl)."""
    require_binary("etcd")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    for k in ("DR_BUCKET", "DR_STACK_OUTPUTS_FILE", "DR_TALOS_DIR"):
        monkeypatch.delenv(k, raising=False)
    base_path = os.environ["PATH"]
    assert shutil.which("etcdutl", path=base_path) is None, "these tests expect no etcdutl on the base PATH"
    real_etcdctl = require_binary("etcdctl")

    def use(kind: str, mode: str = "help") -> Path:
        bin35 = str(require_etcd35())
        shim = str(_shim(tmp_path / f"shim-{mode}", mode, real_etcdctl))
        monkeypatch.setenv("PATH", {"3.4": base_path, "3.5": f"{bin35}:{base_path}",
                                    "3.6+etcdutl": f"{shim}:{bin35}:{base_path}", "3.6": f"{shim}:{base_path}"}[kind])
        t = tmp_path / "tmp"
        t.mkdir(exist_ok=True)
        return t

    return use


@pytest.mark.parametrize("taken_by", ["3.4", "3.5"])
@pytest.mark.parametrize("kind, tool", [("3.4", "etcdctl"), ("3.5", "etcdutl"), ("3.6+etcdutl", "etcdutl")])
def test_a_snapshot_verifies_with_each_tool_set(snaps, tools, taken_by, kind, tool):
    work = tools(kind)
    res = run_cli(verify.main, str(snaps[taken_by]), "--tmp-dir", str(work))
    assert res.code == 0, res
    assert f"({tool} snapshot status: revision" in res.out, res.out
    assert f"with {tool} snapshot restore" in res.out, res.out
    assert f"{len(KEYS)} keys" in res.out


@pytest.mark.parametrize("mode", ["help", "error", "lying"])
def test_a_3_6_etcdctl_without_etcdutl_is_missing_etcdutl_never_corrupt(snaps, tools, mode):
    work = tools("3.6", mode)
    res = run_cli(verify.main, str(snaps["3.4"]), "--tmp-dir", str(work), "--json")
    assert res.code == ExitCode.ETCD_MISSING == 20, res
    assert "install etcdutl" in res.err and "make etcd" in res.err, res.err
    assert "damaged" not in res.err and "CORRUPT" not in res.out


@pytest.mark.parametrize("kind", ["3.4", "3.5", "3.6+etcdutl"])
@pytest.mark.parametrize("taken_by", ["3.4", "3.5"])
def test_a_damaged_database_with_a_valid_trailer_is_corrupt(snaps, tools, kind, taken_by):
    work = tools(kind)
    res = run_cli(verify.main, str(snaps[f"damaged-{taken_by}"]), "--tmp-dir", str(work))
    assert res.code == ExitCode.CORRUPT_SNAPSHOT == 7, res
    tool = "etcdctl" if kind == "3.4" else "etcdutl"
    assert f"`{tool} snapshot status` says" in res.err and "damaged" in res.err, res.err


@pytest.mark.parametrize("kind", ["3.4", "3.5"])
def test_an_empty_snapshot_says_no_keys_not_version_mismatch(snaps, tools, kind):
    work = tools(kind)
    res = run_cli(verify.main, str(snaps["empty"]), "--tmp-dir", str(work))
    assert res.code == ExitCode.VERIFY_MISMATCH, res
    assert "no keys" in res.err and "empty etcd" in res.err, res.err
    assert "version mismatch" not in res.err


# --- dr.adapters.etcdlocal directly ------------------------------------------------------------------------------------


def test_status_fields_and_tool(snaps, tools):
    tools("3.5")
    st = etcdlocal.snapshot_status(snaps["3.5"])
    assert (st.tool, st.tool_version, st.command) == ("etcdutl", "3.5.16", "etcdutl snapshot status")
    assert st.revision == len(KEYS) + 1 and st.total_keys and st.total_size and st.hash
    tools("3.4")
    st34 = etcdlocal.snapshot_status(snaps["3.5"])
    assert st34.tool == "etcdctl" and (st34.revision, st34.total_keys, st34.hash) == (st.revision, st.total_keys,
                                                                                     st.hash)


def test_optional_status_with_no_usable_tool_is_unknown(snaps, tools, tmp_path, monkeypatch):
    tools("3.6")
    assert etcdlocal.snapshot_status(snaps["3.4"], optional=True) == etcdlocal.SnapshotStatus(None, None)
    with pytest.raises(EtcdMissing, match="etcdctl 3.6.12 at .* has no `snapshot status`/`restore`"):
        etcdlocal.snapshot_status(snaps["3.4"])
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert etcdlocal.snapshot_status(snaps["3.4"], optional=True).tool is None
    # optional never hides a damaged database from a tool that can read it
    tools("3.6+etcdutl")
    with pytest.raises(CorruptSnapshot):
        etcdlocal.snapshot_status(snaps["damaged-3.4"], optional=True)


def test_binaries_names_what_is_missing(tmp_path):
    bin35 = require_etcd35()
    etcd34, shim = require_binary("etcd"), str(_shim(tmp_path / "shim", "help") / "etcdctl")
    utl = str(bin35 / "etcdutl")

    def check(name: str, **tools: str) -> str:
        try:
            t = etcdlocal.binaries(str(_only(tmp_path / name, **tools)))
        except EtcdMissing as exc:
            return str(exc)
        return t.restorer.name

    assert check("utl-only", etcd=etcd34, etcdutl=utl) == "etcdutl"
    assert check("utl-and-3.6", etcd=etcd34, etcdutl=utl, etcdctl=shim) == "etcdutl"
    assert check("ctl-3.4", etcd=etcd34, etcdctl=require_binary("etcdctl")) == "etcdctl"
    msg = check("ctl-3.6", etcd=etcd34, etcdctl=shim)
    assert "no etcdutl, and no etcdctl with `snapshot restore`" in msg and "etcdctl 3.6.12" in msg
    assert "install etcdutl" in msg and "etcd not found" not in msg
    msg = check("no-etcd", etcdutl=utl)
    assert "etcd not found" in msg and "no etcdutl" not in msg
    assert "etcd, etcdutl and etcdctl not found" in check("nothing")


def test_restore_falls_back_from_a_3_6_etcdctl_and_never_restores_nothing(snaps, tmp_path):
    bin35 = require_etcd35()
    shim = str(_shim(tmp_path / "shim", "help") / "etcdctl")
    only36 = str(_only(tmp_path / "only36", etcdctl=shim))
    with pytest.raises(EtcdMissing):
        etcdlocal.restore_snapshot(snaps["3.4"], tmp_path / "d1", "m", "http://127.0.0.1:1", search_path=only36)
    assert not (tmp_path / "d1").exists()
    both = str(_only(tmp_path / "both", etcdctl=shim, etcdutl=str(bin35 / "etcdutl")))
    tool = etcdlocal.restore_snapshot(snaps["3.4"], tmp_path / "d2", "m", "http://127.0.0.1:1", search_path=both)
    assert tool.name == "etcdutl" and (tmp_path / "d2" / "member" / "snap" / "db").is_file()


def test_the_sandbox_node_uses_etcd_3_5_and_its_etcdutl(snaps, tmp_path, monkeypatch):
    """sandbox.etcd: SANDBOX_ETCD_BIN_DIR, else the 3.5 cache, else PATH; status and restore through etcdlocal."""
    bin35 = require_etcd35()
    from sandbox import etcd as node_etcd
    from sandbox import procs
    from tests.support.tools import free_port

    monkeypatch.delenv("SANDBOX_ETCD_BIN_DIR", raising=False)
    assert node_etcd.bin_dir() == bin35
    monkeypatch.setenv("SANDBOX_ETCD_BIN_DIR", str(tmp_path / "elsewhere"))
    assert node_etcd.bin_dir() == tmp_path / "elsewhere"
    monkeypatch.setattr(node_etcd, "SEARCH_PATH", str(bin35))
    monkeypatch.setattr(node_etcd, "ETCD", str(bin35 / "etcd"))
    assert node_etcd.tool() == "etcdutl 3.5.16" and node_etcd.missing() == []
    st = node_etcd.snapshot_status(snaps["3.4"])
    assert st["revision"] == len(KEYS) + 1 and isinstance(st["hash"], int) and st["totalKey"] and st["totalSize"]
    data, cport, pport = tmp_path / "node-data", free_port(), free_port()
    node_etcd.restore(snaps["3.4"], data, "node", pport)
    pid = node_etcd.start(data, "node", cport, pport, tmp_path / "etcd.log")
    try:
        assert node_etcd.count_prefix(f"http://127.0.0.1:{cport}", "/registry/") == len(KEYS)
    finally:
        procs.stop(pid)
    with pytest.raises(node_etcd.EtcdFailure, match="etcdutl snapshot status"):
        node_etcd.snapshot_status(snaps["damaged-3.4"])


# --- who can reach the throwaway etcd (it holds every secret of the cluster) ---------------------------------------------------------


def _socket_inodes(pid: int) -> set[int]:
    """The inodes of every socket the process holds open (/proc/PID/fd/N -> "socket:[INODE]")."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[len("socket:["):-1]))
    return out


def _inet_inodes() -> dict[int, str]:
    """Every TCP and UDP socket on the machine, IPv4 and IPv6 (proc(5) /proc/net/tcp: the 10th field is the inode,
    the 4th the state, 0A = LISTEN): {inode: "tcp 0A"}."""
    out = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        with open(f"/proc/net/{proto}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                out[int(fields[9])] = f"{proto} {fields[3]}"
    return out


def _unix_listeners() -> dict[int, str]:
    """Listening unix sockets (proc(5) /proc/net/unix: Flags 00010000 is __SO_ACCEPTCON): {inode: path}."""
    out = {}
    with open("/proc/net/unix") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[3], 16) & 0x10000:
                out[int(fields[6])] = fields[7] if len(fields) > 7 else ""
    return out


def _connect_as(uid: int, path: str) -> str:
    """Try to connect to the unix socket ``path`` from a child process running as ``uid``: "connected" or the
    errno's name."""
    import errno

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child only makes system calls, then _exit: safe after fork in a threaded process
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                msg = "connected"
            except OSError as exc:
                msg = errno.errorcode.get(exc.errno or 0, str(exc))
            os.write(w, msg.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        msg = f.read()
    os.waitpid(pid, 0)
    return msg


@pytest.mark.parametrize("kind", ["3.4", "3.5"])
def test_the_throwaway_etcd_is_reachable_only_through_its_private_folder(snaps, tools, kind):
    """No TCP or UDP socket at all; its only listeners are the two unix sockets in its 0700 folder (relative to its
    working directory, which is that folder); another user cannot connect; this process reads every key."""
    work = tools(kind)
    with etcdlocal.ThrowawayEtcd(snaps["3.4"], base_dir=work) as e:
        assert e.proc is not None and e.dir is not None
        pid = e.proc.pid
        mine = _socket_inodes(pid)
        inet = _inet_inodes()
        assert not [inet[i] for i in mine if i in inet], "the throwaway etcd has a TCP or UDP socket"
        listeners = _unix_listeners()
        assert sorted(listeners[i] for i in mine if i in listeners) == sorted([etcdlocal.CLIENT_SOCKET,
                                                                              etcdlocal.PEER_SOCKET])
        assert Path(os.readlink(f"/proc/{pid}/cwd")) == e.dir
        assert stat.S_IMODE(e.dir.stat().st_mode) == 0o700
        client = e.dir / etcdlocal.CLIENT_SOCKET
        assert stat.S_ISSOCK(client.lstat().st_mode) and e.endpoint == f"unix:{client}"
        assert sorted(kv.key.decode() for kv in e.iter_kvs()) == sorted(KEYS)
        if os.geteuid() == 0:  # only root can become another user; the folder's mode alone is checked otherwise
            assert _connect_as(65534, str(client)) == "EACCES"  # nobody: no search permission on the folder
        with pytest.raises(ConnectionRefusedError):  # and nothing took the old kind of address
            socket.create_connection(("127.0.0.1", 2379), timeout=1).close()


def test_a_long_tmp_dir_still_reaches_the_socket(snaps, tools):
    """sun_path holds 108 bytes; a deeper --tmp-dir is reached through the folder's descriptor."""
    deep = tools("3.5") / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    with etcdlocal.ThrowawayEtcd(snaps["3.5"], base_dir=deep) as e:
        assert e.endpoint.startswith("unix:/proc/self/fd/")
        assert len(list(e.iter_kvs())) == len(KEYS)


@pytest.mark.parametrize("kind", ["3.4", "3.5"])
def test_etcd_s_hash_check_is_skipped_only_for_the_trailer_that_was_checked(snaps, tools, tmp_path, kind):
    tools(kind)
    snap = snaps["3.4"]
    checked = verify_file(snap)
    with etcdlocal.ThrowawayEtcd(snap, base_dir=tmp_path, checked=checked) as e:
        assert e.skipped_hash_check and e.count == len(KEYS)
    with etcdlocal.ThrowawayEtcd(snap, base_dir=tmp_path) as e:
        assert not e.skipped_hash_check
    # A file that no longer ends in the checked trailer (replaced since): etcd checks the hash itself, and refuses.
    bad = tmp_path / "changed.db"
    data = bytearray(snap.read_bytes())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptSnapshot):
        etcdlocal.ThrowawayEtcd(bad, base_dir=tmp_path, checked=checked).__enter__()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(etcdlocal.DIR_PREFIX)] == []
