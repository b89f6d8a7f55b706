"""Bounded work on every input (issue 21, hostile-inputs 15-16, 21, 27, 29-30, 33-34): a zstd bomb stops at the byte
cap, a hostile age header is refused before decryption, a FIFO among our state files is refused instead of blocking,
names are printed escaped, and a name the file system refuses has its own exit code."""

from __future__ import annotations

import errno
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from backports import zstd

from dr.adapters import fsutil, journal_file
from dr.adapters.codec import AGE_MAX_STANZAS
from dr.adapters.store import CATALOG_NAME, LocalStore
from dr.commands import cli, verify
from dr.commands import list as list_cmd
from dr.core.age_keys import parse_identities, recipients
from dr.core.errors import ExitCode, LocalPathError
from dr.core.integrity import BOLT_MAGIC, BOLT_MAGIC_OFFSET
from tests.support.snapshots import age_keygen, synthetic_snapshot
from tests.support.tools import run_cli

MIB = 1024 * 1024


@contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) when the block blocks."""

    def boom(signum, frame):
        raise AssertionError(f"blocked for more than {seconds}s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _bomb(path: Path, decoded_mib: int) -> None:
    """A small .db.zst that decodes to ``decoded_mib`` MiB: a bbolt magic at byte 16, then zeros (hostile 15-16)."""
    head = bytearray(8 * MIB)
    head[BOLT_MAGIC_OFFSET:BOLT_MAGIC_OFFSET + 4] = BOLT_MAGIC.to_bytes(4, "little")
    zeros = zstd.compress(bytes(8 * MIB), level=19)
    path.write_bytes(zstd.compress(bytes(head), level=19) + zeros * (decoded_mib // 8 - 1))


def test_a_zstd_bomb_stops_at_the_cap(tmp_path, monkeypatch):
    bomb = tmp_path / "etcd-snapshot-20261206T000000Z.db.zst"
    _bomb(bomb, 512)
    assert bomb.stat().st_size < 200 * 1024
    monkeypatch.setenv("DR_MAX_SNAPSHOT_BYTES", str(32 * MIB))
    work = tmp_path / "v"
    t0 = time.monotonic()
    res = run_cli(verify.main, str(bomb), "--tmp-dir", str(work))
    assert res.code == ExitCode.TOO_BIG, res
    assert "decompression bomb" in res.err and "nothing was kept" in res.err
    assert time.monotonic() - t0 < 60
    written = sum(p.stat().st_size for p in work.rglob("*") if p.is_file()) if work.exists() else 0
    assert written == 0, list(work.rglob("*"))  # stopped there, the .part removed


def _grease_header(blob: bytes, n: int) -> bytes:
    """``blob`` (an age file) with ``n`` unknown stanzas inserted before the real ones (hostile 21)."""
    intro, rest = blob.split(b"\n", 1)
    grease = b"".join(b"-> grease-%d x\n\n" % i for i in range(n))
    return intro + b"\n" + grease + rest


def test_an_age_header_with_too_many_stanzas_is_refused_before_decryption(tmp_path):
    from dr.adapters import codec

    key = age_keygen(tmp_path)
    out: list[bytes] = []
    codec.encode(iter([synthetic_snapshot(4)]), out.append, compress=True, recipients=recipients([key.recipient]))
    blob = b"".join(out)
    for n, refused in ((AGE_MAX_STANZAS - 4, False), (AGE_MAX_STANZAS + 1, True), (200_000, True)):
        path = tmp_path / f"etcd-snapshot-20261206T00{n % 60:02d}00Z.db.zst.age"
        path.write_bytes(_grease_header(blob, n))
        t0 = time.monotonic()
        with deadline(60):
            res = run_cli(verify.main, str(path), "--identity", str(key.identity_file),
                          "--tmp-dir", str(tmp_path / "v"))
        if refused:
            assert res.code == ExitCode.CORRUPT_SNAPSHOT, res
            assert "age header" in res.err and "refused before decryption" in res.err
            assert time.monotonic() - t0 < 10
        else:
            assert "age header" not in res.err, res  # within the cap: read as before (an unknown stanza is fine)
    assert parse_identities(key.identity_text)


@pytest.mark.parametrize("make", ["fifo", "symlink", "folder"])
def test_state_files_are_regular_files_or_refused(tmp_path, make):
    path = tmp_path / "restore-journal.json"
    if make == "fifo":
        os.mkfifo(path)
    elif make == "symlink":
        (tmp_path / "elsewhere").write_text("{}")
        path.symlink_to(tmp_path / "elsewhere")
    else:
        path.mkdir()
    with deadline(10):
        with pytest.raises(LocalPathError) as info:
            journal_file.load(path)
    assert str(path) in info.value.message
    assert fsutil.read_state_file(tmp_path / "absent.json", "x") is None


def test_a_fifo_catalog_does_not_block_list_or_verify(tmp_path, monkeypatch, real_snapshot):
    """Hostile 33: `.talos/snapshots/.verified.json` is a FIFO."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    snaps = tmp_path / ".talos" / "snapshots"
    snaps.mkdir(parents=True)
    snap = snaps / "etcd-snapshot-20261206T000000Z.db"
    snap.write_bytes(real_snapshot.read_bytes())
    os.mkfifo(snaps / CATALOG_NAME)
    with deadline(20):
        res = run_cli(list_cmd.main, "--limit", "0", "--bucket", "")
        assert res.code == ExitCode.LOCAL_PATH, res
        assert "FIFO" in res.err
        with pytest.raises(LocalPathError):
            LocalStore(snaps).describe(LocalStore(snaps).list()[0])


def test_names_are_printed_escaped(tmp_path, monkeypatch):
    """Hostile 29: a name on the command line with a newline and ESC cannot clear the terminal or forge a line."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    hostile = "etcd-snapshot-20261206T000000Z.db\n\x1b[2Jdr.verify: verified OK \u202e"
    res = run_cli(verify.main, hostile, "--tmp-dir", str(tmp_path / "v"))
    assert res.code != 0
    assert "\x1b" not in res.err and "\u202e" not in res.err
    assert res.err.count("\n") == 1, res.err  # one line
    assert "\\x1b" in res.err and "\\u202e" in res.err
    assert cli.printable("a\x1b[31mb\u202ec\n") == "a\\x1b[31mb\\u202ec\\n"


def test_a_name_the_file_system_refuses_has_its_own_exit_code(tmp_path, monkeypatch):
    """Hostile 30: a 5000-character name was exit 1, "a bug"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    for name in ("a" * 5000, "etcd-snapshot-20261206T000000Z.db" + "x" * 300):
        res = run_cli(verify.main, name, "--tmp-dir", str(tmp_path / "v"))
        assert res.code == ExitCode.NAME_REFUSED, res
        assert "too long" in res.err and "unexpected" not in res.err
    assert errno.ENAMETOOLONG  # the errno this maps


@pytest.mark.slow
def test_a_backup_stream_past_the_cap_stops_and_leaves_nothing(sandbox_factory, monkeypatch, tmp_path):
    """Hostile 43-44: a node that never ends its stream filled the disk at 100 MB/s. The same cap as a stored
    snapshot's (DR_MAX_SNAPSHOT_BYTES) applies to the stream: here a real snapshot over a 16 KiB cap."""
    from dr.commands import backup

    sb = sandbox_factory(with_s3=False)
    for k, v in sb.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    for i in range(20):
        sb.put(f"/registry/configmaps/default/c{i}", "x" * 1000)
    monkeypatch.setenv("DR_MAX_SNAPSHOT_BYTES", str(16 * 1024))
    res = run_cli(backup.main)
    assert res.code == ExitCode.TOO_BIG, res
    assert "without ending its snapshot" in res.err
    left = list((tmp_path / ".talos" / "snapshots").iterdir()) if (tmp_path / ".talos" / "snapshots").exists() else []
    assert [p for p in left if p.is_file()] == [], left


def test_a_name_two_stored_snapshots_answer_to_is_refused(tmp_path):
    """Hostile 22: `X.db` and `X.db.zst` side by side; `list` shows one row, and `restore X.db` took the other one."""
    from dr.adapters.store import find
    from dr.core.errors import ConfigError

    name = "etcd-snapshot-20261205T100000Z.db"
    (tmp_path / name).write_bytes(synthetic_snapshot(2, seed=1))
    (tmp_path / (name + ".zst")).write_bytes(zstd.compress(synthetic_snapshot(2, seed=2)))
    entries = LocalStore(tmp_path).list()
    with pytest.raises(ConfigError) as info:
        find(entries, name)
    assert "more than one stored snapshot" in info.value.message
    assert find(entries, name + ".zst").name.name == name + ".zst"  # the full stored name is unambiguous


def test_list_prints_hostile_s3_names_escaped():
    """Hostile 27: an S3 key with ANSI escapes and U+202E (talos-backup's name pattern accepts them)."""
    import io
    from datetime import UTC, datetime

    hostile = "\x1b[31mEVIL\x1b[0m\u202e-2026-12-06T21:00:00Z.snap"
    out = io.StringIO()
    list_cmd.print_table([list_cmd.Row(hostile, "2026-12-06T21:00:00Z", "s3", 100)], datetime.now(UTC), out)
    text = out.getvalue()
    assert "\x1b" not in text and "\u202e" not in text
    assert "\\x1b[31mEVIL" in text and "\\u202e" in text
