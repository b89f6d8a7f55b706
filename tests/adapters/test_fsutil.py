"""dr.adapters.fsutil: the one atomic write (no partial file, no write through a link; STYLE "Files written safely")."""

from __future__ import annotations

import os
import stat

import pytest

from dr.adapters import fsutil
from dr.core.errors import ConfigError, ExitCode


def _mode(p) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_mode_from_the_first_byte_whatever_the_umask(tmp_path):
    target = tmp_path / "secret"
    seen = []
    old = os.umask(0)
    try:
        with fsutil.atomic_writer(target) as f:
            tmp = [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
            assert len(tmp) == 1 and tmp[0].name.startswith("secret.")
            seen.append(_mode(tmp[0]))  # before any byte is written
            f.write(b"data")
        fsutil.atomic_write(tmp_path / "public", "x", mode=0o644)
    finally:
        os.umask(old)
    assert seen == [0o600]
    assert target.read_bytes() == b"data" and _mode(target) == 0o600
    assert _mode(tmp_path / "public") == 0o644
    assert _leftovers(tmp_path) == []


def test_umask_does_not_weaken_the_requested_mode(tmp_path):
    old = os.umask(0o077)
    try:
        fsutil.atomic_write(tmp_path / "pkg.zip", b"z", mode=0o644)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "pkg.zip") == 0o644


def test_a_symlink_target_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    link = tmp_path / "talosconfig"
    link.symlink_to(victim)
    with pytest.raises(ConfigError) as e:
        fsutil.atomic_write(link, "evil")
    assert e.value.exit_code == ExitCode.CONFIG and "symbolic link" in e.value.message
    assert victim.read_text() == "keep" and link.is_symlink()
    assert _leftovers(tmp_path) == []


def test_a_planted_symlink_at_the_temporary_name_is_not_followed(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.chmod(victim, 0o644)
    tokens = iter(["aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr(fsutil.secrets, "token_hex", lambda n: next(tokens))
    planted = tmp_path / "journal.json.aaaaaaaa.part"
    planted.symlink_to(victim)
    stale = tmp_path / "journal.json.part"  # the old fixed name, left by an earlier version: not reused
    stale.write_text("stale")
    fsutil.atomic_write(tmp_path / "journal.json", "new")
    assert (tmp_path / "journal.json").read_text() == "new" and _mode(tmp_path / "journal.json") == 0o600
    assert victim.read_text() == "keep" and _mode(victim) == 0o644, "the planted link was followed"
    assert planted.is_symlink() and stale.read_text() == "stale", "files this call did not create are left alone"
    assert not (tmp_path / "journal.json.bbbbbbbb.part").exists()


def test_overwrite_false_refuses_an_existing_file(tmp_path):
    target = tmp_path / "snap.db"
    target.write_bytes(b"old")
    with pytest.raises(ConfigError, match="already exists"):
        fsutil.atomic_write(target, b"new", overwrite=False)
    assert target.read_bytes() == b"old" and _leftovers(tmp_path) == []
    fsutil.atomic_write(tmp_path / "fresh.db", b"new", overwrite=False)
    assert (tmp_path / "fresh.db").read_bytes() == b"new"


def test_overwrite_false_loses_a_race_safely(tmp_path):
    target = tmp_path / "snap.db"
    with pytest.raises(ConfigError, match="already exists"):
        with fsutil.atomic_writer(target, overwrite=False) as f:
            f.write(b"mine")
            target.write_bytes(b"theirs")  # appears between the check and the rename
    assert target.read_bytes() == b"theirs" and _leftovers(tmp_path) == []


@pytest.mark.parametrize("exc", [ValueError("check failed"), KeyboardInterrupt()])
def test_an_exception_leaves_no_temporary_file_and_the_old_content(tmp_path, exc):
    target = tmp_path / "catalog.json"
    target.write_text("old")
    with pytest.raises(type(exc)):
        with fsutil.atomic_writer(target) as f:
            f.write(b"half of the new")
            raise exc
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_the_file_and_its_folder_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        st = os.fstat(fd)
        synced.append("dir" if stat.S_ISDIR(st.st_mode) else "file")
        if stat.S_ISDIR(st.st_mode):
            assert os.path.samestat(st, os.stat(tmp_path))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    fsutil.atomic_write(tmp_path / "f", b"x")
    assert synced == ["file", "dir"]
    synced.clear()
    fsutil.atomic_write(tmp_path / "g", b"x", fsync_dir=False)
    assert synced == ["file"]


def test_commit_renames_a_file_another_program_wrote(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)), real(fd)))
    part = tmp_path / "etcd.db.part"
    part.write_bytes(b"snap")
    fsutil.commit(part, tmp_path / "etcd.db")
    assert (tmp_path / "etcd.db").read_bytes() == b"snap" and not part.exists()
    assert synced == [True]
    link = tmp_path / "other.db"
    link.symlink_to(tmp_path / "etcd.db")
    part.write_bytes(b"snap2")
    with pytest.raises(ConfigError, match="symbolic link"):
        fsutil.commit(part, link)
