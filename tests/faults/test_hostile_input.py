"""Hostile input: path traversal in URIs and paths, shell metacharacters in names, a snapshot that is a symlink, a
talosconfig others can read or with a wrong context. Nothing is executed, nothing touched, the message says why."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dr.commands import backup, restore, verify
from dr.core.errors import ExitCode
from tests.faults.conftest import put_single_part
from tests.support.tools import run_cli

pytestmark = pytest.mark.slow  # a sandbox per test (0.4-7 s each)

MARKER = "/registry/configmaps/default/still-here"
SHELLY = ["etcd; rm -rf x.db", "$(touch pwned).db", "`touch pwned`.db", "a'b\"c|d&e>f.db"]


@pytest.fixture
def node_env(sandbox_workdir, monkeypatch, tmp_path):
    sb = sandbox_workdir
    work = tmp_path / "work"
    monkeypatch.setenv("DR_TALOS_DIR", ".talos")  # the cwd's own .talos/ (the sandbox's env names its own)
    sb.put(MARKER, "x")
    (work / "x.db").write_text("sentinel")  # what `rm -rf x.db` would remove
    return sb


def _untouched(sb, calls_before: int | None = None) -> None:
    assert MARKER in sb.keys()
    assert not any("reset" in c["argv"] or "bootstrap" in c["argv"] for c in sb.calls())
    if calls_before is not None:
        assert len(sb.calls()) == calls_before
    assert Path("x.db").read_text() == "sentinel"
    assert not Path("pwned").exists() and not Path("pwned.db").exists()


TRAVERSAL = ["s3://bucket-name/../x", "s3://bucket-name/snapshots/../../etc/passwd", "s3://bucket-name/./x.db",
             "s3://../etc/passwd", "s3://bucket-name/a/./../x.db"]


def test_traversal_in_s3_uri_is_refused(node_env, tmp_path):
    calls = len(node_env.calls())
    for uri in TRAVERSAL:
        for main, extra in ((restore.main, ["--yes"]), (verify.main, ["--tmp-dir", str(tmp_path / "v")])):
            res = run_cli(main, uri, *extra)
            assert res.code == ExitCode.CONFIG, (uri, res)
            assert uri in res.err
    _untouched(node_env, calls)


def test_traversal_in_local_path_reads_nothing_it_should_not(node_env):
    depth = len(Path.cwd().parts) - 1
    hostile = "../" * depth + "etc/passwd"  # really reaches /etc/passwd
    assert Path(hostile).resolve() == Path("/etc/passwd")
    res = run_cli(restore.main, hostile, "--yes")
    assert res.code == ExitCode.NOT_A_SNAPSHOT, res
    assert "not an etcd snapshot" in res.err
    res = run_cli(restore.main, "../../etc/no-such-file", "--yes")
    assert res.code == ExitCode.NOT_FOUND, res
    _untouched(node_env)


def test_shell_metacharacters_in_save_to_s3_name(dr_env, tmp_path):
    e = dr_env
    Path("x.db").write_text("sentinel")
    res = run_cli(backup.main, "--save-to-s3", "etcd; rm -rf x.db")
    assert res.code == ExitCode.NOT_FOUND, res  # no such file: refused before anything runs
    assert e.objects() == []
    assert run_cli(backup.main).code == 0
    src = e.work / ".talos/snapshots"
    [snap] = src.glob("etcd-snapshot-*.db")  # the fresh snapshot it takes anyway
    for name in SHELLY:
        hostile = tmp_path / name
        shutil.copy(snap, hostile)
        res = run_cli(backup.main, "--save-to-s3", str(hostile))
        assert res.code == 0, (name, res)
    keys = e.objects()
    assert keys and all(k.startswith("snapshots/etcd-snapshot-") and k.endswith("Z.db.zst") for k in keys), keys
    assert not any(ch in k for k in keys for ch in ";$`'\"|&> ")
    assert Path("x.db").read_text() == "sentinel"
    assert not Path("pwned").exists() and not (tmp_path / "pwned").exists()


def test_shell_metacharacters_in_object_key_and_local_name(dr_env, tmp_path):
    e = dr_env
    snap = tmp_path / "s.db"
    e.sb.etcdctl("snapshot", "save", str(snap))
    key = "snapshots/etcd-snapshot-20260101T000000Z;touch pwned;$(touch pwned).db"
    put_single_part(e.client, e.bucket, key, snap)
    res = run_cli(verify.main, f"s3://{e.bucket}/{key}", "--tmp-dir", str(tmp_path / "v"))
    assert res.code == 0, res
    hostile = tmp_path / "$(touch pwned); rm -rf x.db"
    shutil.copy(snap, hostile)
    res = run_cli(verify.main, str(hostile), "--tmp-dir", str(tmp_path / "v"))
    assert res.code == 0, res
    assert not Path("pwned").exists() and not (tmp_path / "pwned").exists()
    assert not any(p.name == "pwned" for p in tmp_path.rglob("pwned"))


def test_snapshot_that_is_a_symlink_is_refused(node_env, tmp_path):
    real = tmp_path / "real.db"
    node_env.etcdctl("snapshot", "save", str(real))
    link = tmp_path / "etcd-snapshot-20260101T000000Z.db"
    link.symlink_to(real)
    calls = len(node_env.calls())
    res = run_cli(restore.main, str(link), "--yes")
    assert res.code == ExitCode.CONFIG, res
    assert "symbolic link" in res.err
    _untouched(node_env, calls)
    res = run_cli(backup.main, "--save-to-s3", str(link), "--bucket", "any-bucket")
    assert res.code == ExitCode.CONFIG, res
    assert "symbolic link" in res.err
    assert len(node_env.calls()) == calls  # refused before the node is asked for a snapshot


@pytest.mark.parametrize("command", ["backup", "restore"])
def test_talosconfig_readable_by_others_is_refused(node_env, tmp_path, command):
    cfg = Path(os.environ["TALOSCONFIG"])
    os.chmod(cfg, 0o644)
    calls = len(node_env.calls())
    snap = tmp_path / "s.db"
    node_env.etcdctl("snapshot", "save", str(snap))
    res = run_cli(backup.main) if command == "backup" else run_cli(restore.main, str(snap), "--yes")
    assert res.code == ExitCode.CONFIG, res
    assert "readable by others" in res.err and "chmod 600" in res.err
    _untouched(node_env, calls)
    assert not list(Path(".talos/snapshots").glob("*")) if Path(".talos/snapshots").exists() else True


@pytest.mark.parametrize("command", ["backup", "restore"])
def test_talosconfig_wrong_context_is_refused(node_env, tmp_path, command):
    calls = len(node_env.calls())
    snap = tmp_path / "s.db"
    node_env.etcdctl("snapshot", "save", str(snap))
    argv = ["--talos-context", "prod-cluster-that-is-not-here"]
    res = run_cli(backup.main, *argv) if command == "backup" else run_cli(restore.main, str(snap), "--yes", *argv)
    assert res.code == ExitCode.CONFIG, res
    assert "no context 'prod-cluster-that-is-not-here'" in res.err
    _untouched(node_env, calls)


def test_partials_this_tool_did_not_create_are_never_deleted_or_opened(tmp_path):
    """clean_partials removes only our own leftovers (a snapshot name plus our .part suffix,
    regular files), never another file, a link or a FIFO; a planted FIFO at talosctl's .part name is refused, not
    opened (the restore hung on it)."""
    import os as _os

    from dr.commands.backup import clean_partials

    snaps = tmp_path / "snapshots"
    snaps.mkdir()
    ours = [snaps / "etcd-snapshot-20260101T000000Z.db.part", snaps / "etcd-snapshot-20260101T000000Z.db.1a2b3c4d.part"]
    theirs = [snaps / "notes.part", snaps / "etcd-snapshot-bad.db.part"]
    for p in ours + theirs:
        p.write_bytes(b"x")
    fifo = snaps / "etcd-snapshot-20260102T000000Z.db.part"
    _os.mkfifo(fifo)
    link = snaps / "etcd-snapshot-20260103T000000Z.db.part"
    link.symlink_to(tmp_path / "victim")
    removed = clean_partials(snaps)
    assert sorted(removed) == sorted(ours)
    assert all(p.exists() for p in theirs) and fifo.exists() and link.is_symlink()
