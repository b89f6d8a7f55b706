"""One proof before any reset (issue 21, hostile-inputs 12): every snapshot `talos-dr verify` refuses, `talos-dr restore`
refuses with the same exit code before it touches the node (dr.commands.verify.prove is the one code path), and a
machine without etcd refuses to restore unless --skip-etcd-proof says, and the prompt repeats, what is not proved."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
from pathlib import Path

import pytest

from dr.commands import restore, verify
from dr.core.errors import ExitCode
from tests.support.tools import run_cli, start_etcd

pytestmark = pytest.mark.slow  # a sandbox node and a real etcd

MARKER = "/registry/configmaps/default/still-here"
FAST = ("--poll-interval", "0.1", "--reboot-timeout", "30s", "--bootstrap-timeout", "30s", "--health-timeout", "20s")


def _retrail(data: bytes) -> bytes:
    body = data[:-32]
    return body + hashlib.sha256(body).digest()


def _root_page(good: bytes) -> tuple[int, int]:
    """(the root bucket's page, the page size): a page every walk reaches, whatever the seeded data's layout."""
    from dr.core import bbolt

    data = good[:-32]
    meta = bbolt.check_meta(data[: bbolt.HEAD_NEEDED], len(data))
    return meta.root, meta.page_size


def _root_page_garbage(good: bytes) -> bytes:
    root, size = _root_page(good)
    g = bytearray(good)
    g[root * size + 8:root * size + 10] = b"\xff\xff"  # its flags: neither branch, leaf, meta nor freelist
    return _retrail(bytes(g))


def _both_metas_broken(good: bytes) -> bytes:
    g = bytearray(good)
    g[16 + 40] ^= 0x01  # meta page 0's pgid: checksum no longer matches
    g[4096 + 16 + 40] ^= 0x01
    return _retrail(bytes(g))


def _flip_mid(good: bytes) -> bytes:
    g = bytearray(good)
    g[len(g) // 2] ^= 0x10
    return bytes(g)


@pytest.fixture(scope="module")
def other_etcd_snapshots(tmp_path_factory):
    """Snapshots verify refuses for their content, not their bytes: an empty etcd, and one without Kubernetes keys."""
    base = tmp_path_factory.mktemp("other-etcd")
    e = start_etcd(base)
    try:
        empty = e.snapshot(base / "empty.db")
        e.put("/not-kubernetes/a", "1")
        e.put("/not-kubernetes/b", "2")
        no_registry = e.snapshot(base / "no-registry.db")
    finally:
        e.proc.terminate()
        e.proc.wait(10)
    return {"empty-etcd": empty.read_bytes(), "no-registry": no_registry.read_bytes()}


@pytest.fixture
def node_env(sandbox_workdir, tmp_path):
    sb = sandbox_workdir
    sb.put(MARKER, "x")
    good = tmp_path / "good.db"
    sb.etcdctl("snapshot", "save", str(good))
    return sb, good.read_bytes()


def _node_untouched(sb, calls_before: int) -> None:
    assert MARKER in sb.keys()
    argvs = [c["argv"] for c in sb.calls()[calls_before:]]
    assert not any("reset" in a or "bootstrap" in a for a in argvs), argvs


HOSTILE = {
    "zero": (lambda good, other: b"", ExitCode.EMPTY_SNAPSHOT),
    "trunc-4096": (lambda good, other: good[:4096], ExitCode.TRUNCATED_SNAPSHOT),
    "trunc-trailer": (lambda good, other: good[:-32], ExitCode.TRUNCATED_SNAPSHOT),
    "flip-mid": (lambda good, other: _flip_mid(good), ExitCode.CORRUPT_SNAPSHOT),
    "badpage-fixed": (lambda good, other: _root_page_garbage(good), None),  # refused; the code is the tool's (7 or 21)
    "badmeta-fixed": (lambda good, other: _both_metas_broken(good), ExitCode.CORRUPT_SNAPSHOT),
    "empty-etcd": (lambda good, other: other["empty-etcd"], ExitCode.VERIFY_MISMATCH),
    "no-registry": (lambda good, other: other["no-registry"], ExitCode.VERIFY_MISMATCH),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_what_verify_refuses_restore_refuses_before_the_node(node_env, other_etcd_snapshots, tmp_path, case):
    sb, good = node_env
    make, code = HOSTILE[case]
    path = tmp_path / f"etcd-snapshot-20261206T000000Z-{case}.db"
    path.write_bytes(make(good, other_etcd_snapshots))
    before = path.read_bytes()
    v = run_cli(verify.main, str(path), "--tmp-dir", str(tmp_path / "v"))
    assert v.code != 0, v
    if code is not None:
        assert v.code == code, v
    calls = len(sb.calls())
    r = run_cli(restore.main, str(path), "--yes", *FAST, stdin=io.StringIO(""))
    assert r.code == v.code, (v, r)  # the same refusal, from the same proof
    _node_untouched(sb, calls)
    assert path.read_bytes() == before
    assert not (Path(".talos") / "restore-journal.json").exists()


def test_the_good_snapshot_passes_the_same_proof(node_env, tmp_path):
    """The control: the snapshot the hostile ones are made from verifies."""
    _, good = node_env
    path = tmp_path / "etcd-snapshot-20261206T000000Z.db"
    path.write_bytes(good)
    v = run_cli(verify.main, str(path), "--tmp-dir", str(tmp_path / "v"))
    assert v.code == 0, v


def _path_without_etcd(tmp_path: Path, sb) -> str:
    """PATH with the sandbox's talosctl and Python but no etcd, etcdutl or etcdctl (hostile-inputs 12)."""
    minbin = tmp_path / "minbin"
    minbin.mkdir()
    for b in ("sh", "bash", "env", "python3", "cat", "ls", "sleep", "uname"):
        found = shutil.which(b)
        if found:
            (minbin / b).symlink_to(found)
    path = os.pathsep.join([str(sb.bin_dir), str(Path(sys.executable).parent), str(minbin)])
    assert not any(shutil.which(t, path=path) for t in ("etcd", "etcdutl", "etcdctl")), path
    return path


def test_without_etcd_restore_refuses_a_page_damaged_snapshot_before_the_reset(node_env, tmp_path, monkeypatch):
    sb, good = node_env
    bad = tmp_path / "etcd-snapshot-20261206T000000Z.db"
    bad.write_bytes(_root_page_garbage(good))
    monkeypatch.setenv("PATH", _path_without_etcd(tmp_path, sb))
    calls = len(sb.calls())
    r = run_cli(restore.main, str(bad), "--yes", *FAST, stdin=io.StringIO(""))
    assert r.code == ExitCode.ETCD_MISSING, r
    assert "cannot be proved" in r.err and "make etcd" in r.err and verify.SKIP_ETCD_FLAG in r.err
    _node_untouched(sb, calls)


def test_skip_etcd_proof_is_named_in_the_prompt(node_env, tmp_path, monkeypatch):
    sb, good = node_env
    snap = tmp_path / "etcd-snapshot-20261206T000000Z.db"
    snap.write_bytes(good)
    monkeypatch.setenv("PATH", _path_without_etcd(tmp_path, sb))
    calls = len(sb.calls())
    # No --yes and no terminal: the prompt is printed, then refused (17) before anything changes.
    r = run_cli(restore.main, str(snap), verify.SKIP_ETCD_FLAG, *FAST, stdin=io.StringIO(""))
    assert r.code == ExitCode.NOT_CONFIRMED, r
    assert "NOT PROVED" in r.out and "AFTER its reset" in r.out, r.out
    assert "NOT proved" in r.out  # the line before the prompt says it too
    _node_untouched(sb, calls)


def test_sigterm_before_the_reset_leaves_no_journal(node_env, tmp_path):
    """Hostile-inputs 51: SIGTERM during the safety snapshot left a journal with only `confirmed`, and the next restore
    of another snapshot was refused with exit 19 although the node was never touched."""
    import signal
    import subprocess
    import time as _time

    sb, good = node_env
    snap = tmp_path / "etcd-snapshot-20261206T000000Z.db"
    snap.write_bytes(good)
    sb.set_faults(snapshot_delay_seconds=30)  # the safety snapshot waits: that is where the signal comes
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    proc = subprocess.Popen([sys.executable, "-m", "dr.restore", str(snap), "--yes", *FAST], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    journal = Path(os.environ.get("DR_TALOS_DIR", ".talos")) / "restore-journal.json"  # the sandbox env names it
    deadline = _time.monotonic() + 60
    while not journal.exists() and _time.monotonic() < deadline and proc.poll() is None:
        _time.sleep(0.1)
    assert journal.exists(), proc.communicate(timeout=30)[0]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, out
    assert "nothing was changed" in out
    assert not journal.exists()
    sb.set_faults(snapshot_delay_seconds=None)
    assert MARKER in sb.keys()


def test_an_expired_client_certificate_is_named_before_anything(node_env, tmp_path):
    """Hostile-inputs 46: restore said "TLS/certificate error ... bad certificate", never "expired"."""
    from datetime import UTC, datetime, timedelta

    sb, good = node_env
    snap = tmp_path / "etcd-snapshot-20261206T000000Z.db"
    snap.write_bytes(good)
    calls = len(sb.calls())
    later = datetime.now(UTC) + timedelta(days=3650)
    r = run_cli(restore.main, str(snap), "--yes", *FAST, stdin=io.StringIO(""), now=lambda: later)
    assert r.code == ExitCode.CONFIG, r
    assert "expired on" in r.err and "pulumi up" in r.err
    assert len(sb.calls()) == calls


def test_skip_etcd_proof_still_walks_the_pages(node_env, tmp_path, monkeypatch):
    """Hostile-inputs 12 with the explicit skip: the page tree is walked in Python (dr.core.bbolt.walk_pages), so the
    damaged root page is refused before the reset even without etcd."""
    sb, good = node_env
    bad = tmp_path / "etcd-snapshot-20261206T000000Z.db"
    bad.write_bytes(_root_page_garbage(good))
    monkeypatch.setenv("PATH", _path_without_etcd(tmp_path, sb))
    calls = len(sb.calls())
    r = run_cli(restore.main, str(bad), "--yes", verify.SKIP_ETCD_FLAG, *FAST, stdin=io.StringIO(""))
    assert r.code == ExitCode.CORRUPT_SNAPSHOT, r
    root, _size = _root_page(good)
    assert f"page {root} (the root bucket) has unexpected type/flags 0xffff" in r.err
    _node_untouched(sb, calls)


def test_the_page_walk_accepts_real_databases_and_names_damage(node_env):
    from dr.core import bbolt

    _, good = node_env
    data = good[:-32]
    meta = bbolt.check_meta(data[: bbolt.HEAD_NEEDED], len(data))
    assert bbolt.walk_pages(data, meta) >= 1
    root, size = _root_page(good)
    with pytest.raises(ValueError, match=f"page {root}"):
        bbolt.walk_pages(_root_page_garbage(good)[:-32], meta)
    cut = bytearray(data)
    cut[root * size:root * size + 8] = (99).to_bytes(8, "little")  # the root page says it is page 99
    with pytest.raises(ValueError, match="says it is page 99"):
        bbolt.walk_pages(bytes(cut), meta)
