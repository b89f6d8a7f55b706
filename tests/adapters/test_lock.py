"""dr.adapters.lock: the .dr.lock file is never opened (or truncated) through a symlink (another local user could point it at a file of yours)."""

from __future__ import annotations

import os

import pytest

from dr.adapters.lock import exclusive
from dr.core.errors import ConfigError, ExitCode, Locked


def test_lock_records_the_holder_and_is_private(tmp_path):
    lock = tmp_path / ".dr.lock"
    with exclusive(lock, "a backup"):
        assert lock.read_text() == f"a backup (pid {os.getpid()})"
        with pytest.raises(Locked):
            with exclusive(lock, "a restore"):
                pass
    assert lock.stat().st_mode & 0o777 == 0o600


def test_a_symlinked_lock_is_refused_and_its_target_not_truncated(tmp_path):
    victim = tmp_path / "precious"
    victim.write_text("keep me")
    lock = tmp_path / ".dr.lock"
    lock.symlink_to(victim)
    with pytest.raises(ConfigError) as e:
        with exclusive(lock, "a backup"):
            pytest.fail("entered the lock through a symlink")
    assert e.value.exit_code == ExitCode.CONFIG and "symbolic link" in e.value.message
    assert victim.read_text() == "keep me"
    dangling = tmp_path / "sub" / ".dr.lock"
    dangling.parent.mkdir()
    dangling.symlink_to(tmp_path / "would-be-created")
    with pytest.raises(ConfigError):
        with exclusive(dangling, "a backup"):
            pass
    assert not (tmp_path / "would-be-created").exists()


def test_a_fifo_as_lock_is_refused_without_blocking(tmp_path):
    lock = tmp_path / ".dr.lock"
    os.mkfifo(lock)
    with pytest.raises(ConfigError, match="not a regular file"):
        with exclusive(lock, "a backup"):
            pass
