"""A wrong clock never deletes (hostile-inputs 39-40): `talos-dr backup --save-to-s3` with this machine's clock 30
days ahead and 30 days behind, against the sandbox node and moto's S3 server (whose clock, LastModified and Date, is
the real one)."""

from __future__ import annotations

import io
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dr.adapters import s3
from dr.adapters.store import S3Store, newest
from dr.commands import backup, prune
from dr.core import naming
from tests.support.tools import run_cli

pytestmark = pytest.mark.slow


def _real_local_snapshots(env, days: tuple[float, ...]) -> list[Path]:
    """Copies of a real snapshot under names 1-3 days old, as earlier backups left them."""
    snaps = env.work / ".talos" / "snapshots"
    snaps.mkdir(parents=True, exist_ok=True)
    src = env.work / "src.db"
    env.sb.etcdctl("snapshot", "save", str(src))
    now = datetime.now(UTC)
    out = []
    for d in days:
        p = snaps / naming.snapshot_name(now - timedelta(days=d))
        shutil.copy(src, p)
        out.append(p)
    src.unlink()
    return out


def _latest_of(env) -> str | None:
    head = env.client.head_object(Bucket=env.bucket, Key="snapshots/" + s3.LATEST_NAME)
    return head["Metadata"].get(s3.META_LATEST_OF)


def test_clock_thirty_days_ahead_prunes_nothing_and_pins_nothing_then_recovers(dr_env):
    env = dr_env
    env.sb.put("/registry/configmaps/default/a", "a")
    real = _real_local_snapshots(env, (1, 2, 3))
    ahead = datetime.now(UTC) + timedelta(days=30)
    res = run_cli(backup.main, "--save-to-s3", now=lambda: ahead)
    assert res.code == 0, res
    assert all(p.exists() for p in real), res.out  # case 39: nothing real was pruned
    assert "ahead of S3's" in res.out  # said out loud, measured against S3's Date
    assert "clock is ahead" in res.err  # the future-named object was not pinned as latest
    [future_key] = env.objects()
    with pytest.raises(Exception):  # noqa: B017 - no `latest` copy was made at all
        _latest_of(env)
    # Case 40: the clock is right again. The new backup is pinned, and `latest` is it, not the future-named one.
    res = run_cli(backup.main, "--save-to-s3")
    assert res.code == 0, res
    [fresh_key] = [k for k in env.objects() if k != future_key]
    assert _latest_of(env) == fresh_key
    store = S3Store(env.client, env.bucket, "snapshots/")
    assert newest(store, err=io.StringIO()).key == fresh_key
    # The future-dated local one is reported by the prune, not trusted as the newest, and nothing real goes.
    res = run_cli(prune.main, "--dry-run")
    assert res.code == 0, res
    res = run_cli(prune.main)
    assert res.code == 0, res
    assert "dated in the future" in res.out and all(p.exists() for p in real)


def test_clock_thirty_days_behind_keeps_its_own_snapshot_and_says_latest_did_not_move(dr_env):
    env = dr_env
    env.sb.put("/registry/configmaps/default/a", "a")
    real = _real_local_snapshots(env, (1, 2, 3, 4))
    assert run_cli(backup.main, "--save-to-s3").code == 0  # a right-clock upload first
    [right] = env.objects()
    time.sleep(1.1)  # S3's LastModified has one-second resolution
    behind = datetime.now(UTC) - timedelta(days=30)
    res = run_cli(backup.main, "--save-to-s3", now=lambda: behind)
    assert res.code == 0, res
    assert "behind S3's" in res.out
    local = sorted((env.work / ".talos" / "snapshots").glob("etcd-snapshot-*"))
    assert all(p.exists() for p in real) and len(local) == len(real) + 2  # its own 30-day-old-named one stays
    [old_named] = [k for k in env.objects() if k != right]
    # Its name says 30 days ago: latest stays on the snapshot whose name S3's clock vouches for, and it says so.
    assert _latest_of(env) == right
    assert "was not moved to it" in res.err and "clock is behind" in res.err
    store = S3Store(env.client, env.bucket, "snapshots/")
    note = io.StringIO()
    assert newest(store, err=note).key == right
    assert "uploaded after it" in note.getvalue() and old_named.rsplit("/", 1)[-1] in note.getvalue()
