"""dr.backup end to end against the sandbox: its simulated node over a real etcd, and moto's S3 server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dr.adapters import s3
from dr.adapters.lock import exclusive
from dr.commands import backup
from dr.core import naming
from dr.core.errors import ExitCode
from dr.core.integrity import verify_file
from tests.support.tools import ROOT, require_binary, run_cli, start_etcd

pytestmark = pytest.mark.slow  # a sandbox per test (1-6 s each)


def _snapshots(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / ".talos" / "snapshots").iterdir())


def _objects(sb) -> list[str]:
    """Snapshot objects (every version), without the ``<prefix>latest`` alias the store pins."""
    client = s3.make_client(sb.region)
    return [o["Key"] for o in client.list_object_versions(Bucket=sb.bucket).get("Versions", [])
            if not o["Key"].endswith("/" + s3.LATEST_NAME)]


def _pending(sb) -> list:
    client = s3.make_client(sb.region)
    return client.list_multipart_uploads(Bucket=sb.bucket).get("Uploads", [])


# Both ways of taking the snapshot: one pass through the Talos API (the default), and talosctl then upload.
VIA = pytest.mark.parametrize("via", [[], ["--via-talosctl"]], ids=["api", "talosctl"])


@VIA
def test_backup_to_s3_round_trips_the_cluster(sandbox_env, tmp_path, monkeypatch, via):
    sb = sandbox_env
    expected = sb.get_prefix("/registry/")
    assert len(expected) > 10  # the sandbox seeded a Kubernetes-shaped cluster
    modes: list[int] = []
    orig = backup.cli.Progress.__call__

    def watch(self, n):  # while the upload runs: the local copy is a 0600 .part
        modes.extend(p.stat().st_mode & 0o777 for p in Path(".talos/snapshots").glob("*.part"))
        orig(self, n)

    monkeypatch.setattr(backup.cli.Progress, "__call__", watch)
    res = run_cli(backup.main, "--save-to-s3", *via)
    assert res.code == 0, res
    if not via:
        assert modes and set(modes) == {0o600}  # one pass: the .part is being written while the upload runs
        assert "trailer verified" in res.out and "uploaded" in res.out
    [local] = _snapshots(Path.cwd())
    assert naming.parse_snapshot_name(local.name) is not None
    assert local.stat().st_mode & 0o777 == 0o600
    verify_file(local)
    key = f"snapshots/{local.name}.zst"  # compressed by default; the local copy stays a plain .db
    assert _objects(sb) == [key]
    client = s3.make_client(sb.region)
    stored = client.get_object(Bucket=sb.bucket, Key=key)["Body"].read()
    body = subprocess.run([require_binary("zstd"), "-q", "-d", "-c"], input=stored, capture_output=True,
                          check=True).stdout
    assert body == local.read_bytes() and len(stored) < len(body)
    info = s3.head_snapshot(client, sb.bucket, key)
    # One pass: the SHA-256 and size are known only once the stream ended, so they are tags (metadata is set when
    # the upload starts); talosctl's file is hashed before the upload, so they are metadata, with its revision.
    facts = {**info.tags, **info.metadata}
    assert info.metadata[s3.META_FORMAT] == "zstd" and int(facts[s3.META_SIZE]) == len(body)
    assert facts[s3.META_SHA256] == body[-32:].hex()
    if via:
        assert int(info.metadata[s3.META_REVISION]) > 0
    assert info.metadata[s3.META_CLUSTER] == sb.cluster_name
    assert "newest first" in res.out and local.name in res.out
    # The object restores, with etcd's own tool, to exactly the keys the cluster had.
    obj = tmp_path / "obj.db"
    obj.write_bytes(body)
    restored = tmp_path / "restored"
    subprocess.run(["etcdctl", "snapshot", "restore", str(obj), "--data-dir", str(restored)], check=True,
                   capture_output=True, env={**os.environ, "ETCDCTL_API": "3"})
    e = start_etcd_on(restored, tmp_path)
    try:
        assert e.keys("/registry/") == sorted(expected)
    finally:
        e.proc.terminate()
        e.proc.wait(10)


def start_etcd_on(data_dir: Path, base: Path):
    """Start a real etcd on an existing data dir (restored snapshot)."""
    import shutil

    work = base / "etcd-run"
    work.mkdir()
    shutil.move(str(data_dir), work / "data")
    return start_etcd(work)


def test_prunes_old_local_snapshots_but_never_the_newest(sandbox_env):
    snapdir = Path(".talos/snapshots")
    snapdir.mkdir(parents=True)
    now = datetime.now(UTC)
    old = [snapdir / naming.snapshot_name(now - timedelta(days=d)) for d in (8, 30)]
    # The new one, this recent one and a third are the newest three (always kept, dr.core.retention.KEEP_NEWEST).
    recent = snapdir / naming.snapshot_name(now - timedelta(days=2))
    (snapdir / naming.snapshot_name(now - timedelta(days=3))).write_bytes(b"x")
    safety = snapdir / naming.snapshot_name(now - timedelta(days=40), safety=True)
    other = snapdir / "notes.txt"
    for p in old + [recent, safety, other]:
        p.write_bytes(b"x")
    res = run_cli(backup.main)
    assert res.code == 0, res
    names = {p.name for p in _snapshots(Path.cwd())}
    assert not any(p.name in names for p in old)
    assert {recent.name, safety.name, other.name} <= names
    assert res.out.count("pruned  ") == 2


def test_keep_days_zero_keeps_only_the_newest_few(sandbox_env):
    """--keep-days 0: only the newest three (dr.core.retention.KEEP_NEWEST; a wrong clock must never leave fewer)."""
    snapdir = Path(".talos/snapshots")
    snapdir.mkdir(parents=True)
    now = datetime.now(UTC)
    for d in (1, 2, 3):
        (snapdir / naming.snapshot_name(now - timedelta(hours=d))).write_bytes(b"x")
    res = run_cli(backup.main, "--keep-days", "0")
    assert res.code == 0, res
    assert len(_snapshots(Path.cwd())) == 3


def test_save_named_older_file(sandbox_env, tmp_path):
    assert run_cli(backup.main).code == 0
    [first] = _snapshots(Path.cwd())
    older = tmp_path / "etcd-snapshot-20200101T000000Z.db"
    older.write_bytes(first.read_bytes())
    res = run_cli(backup.main, "--save-to-s3", str(older), "--no-compress")
    assert res.code == 0, res
    assert _objects(sandbox_env) == ["snapshots/etcd-snapshot-20200101T000000Z.db"]  # --no-compress: plain
    assert len(_snapshots(Path.cwd())) == 2  # a fresh local snapshot was taken anyway


@pytest.mark.parametrize(
    "content, code",
    [
        (None, ExitCode.NOT_FOUND),
        (b"", ExitCode.EMPTY_SNAPSHOT),
        (b"#!/bin/sh\necho not a snapshot\n" * 40, ExitCode.NOT_A_SNAPSHOT),
        ("corrupt", ExitCode.CORRUPT_SNAPSHOT),
        ("truncated", ExitCode.TRUNCATED_SNAPSHOT),
    ],
    ids=["missing", "empty", "foreign", "corrupt", "truncated"],
)
def test_save_bad_file_is_never_uploaded(sandbox_env, tmp_path, real_snapshot, content, code):
    f = tmp_path / "etcd-snapshot-20200101T000000Z.db"
    data = real_snapshot.read_bytes()
    if content == "corrupt":
        f.write_bytes(data[:200] + bytes([data[200] ^ 0xFF]) + data[201:])
    elif content == "truncated":
        f.write_bytes(data[:-1000])
    elif content is not None:
        f.write_bytes(content)
    res = run_cli(backup.main, "--save-to-s3", str(f))
    assert res.code == code, res
    assert res.err.count("\n") == 1 and "error" in res.err
    assert _objects(sandbox_env) == [] and _pending(sandbox_env) == []


def test_backup_needs_no_talosctl(sandbox_env, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the sandbox's talosctl is not on it
    res = run_cli(backup.main, "--save-to-s3")
    assert res.code == 0, res
    [local] = _snapshots(Path.cwd())
    verify_file(local)
    assert _objects(sandbox_env) == [f"snapshots/{local.name}.zst"]


def test_talosctl_missing_with_via_talosctl(sandbox_env, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    res = run_cli(backup.main, "--via-talosctl")
    assert res.code == ExitCode.TALOSCTL_MISSING, res
    assert "talosctl was not found" in res.err


@VIA
def test_node_unreachable(sandbox_env, via):
    sandbox_env.set_faults(unreachable=True)
    res = run_cli(backup.main, *via)
    assert res.code == ExitCode.NODE_UNREACHABLE, res
    assert "does not answer" in res.err
    assert _snapshots(Path.cwd()) == []


@VIA
def test_etcd_down_is_one_clear_line_and_leaves_nothing(sandbox_env, via):
    # The node's etcd client waits for etcd with no deadline: the API path stops after the stall timeout, the
    # talosctl path asks `talosctl service etcd` first (sandbox/CONFORMANCE.md "EtcdSnapshot with etcd down").
    sandbox_env.set_faults(etcd_fails="corrupt data")
    t0 = time.monotonic()
    res = run_cli(backup.main, "--save-to-s3", "--stall-timeout", "1s", *via)
    assert res.code == ExitCode.NODE_ERROR, res
    assert time.monotonic() - t0 < 20
    assert res.err.count("\n") == 1
    assert ("not answering" if not via else "is not running") in res.err and "no snapshot was taken" in res.err
    assert _snapshots(Path.cwd()) == []
    assert _objects(sandbox_env) == [] and _pending(sandbox_env) == []


def test_wrong_node_is_a_forwarding_failure(sandbox_env):
    # apid at the endpoint forwards a call naming any address but its own private IP, and cannot reach it.
    res = run_cli(backup.main, "--node", sandbox_env.public_ip)
    assert res.code in (ExitCode.NODE_UNREACHABLE, ExitCode.CONFIG), res
    assert f"dial tcp {sandbox_env.public_ip}:50000" in res.err
    assert _snapshots(Path.cwd()) == []


def test_maintenance_node_is_refused_by_the_talosconfig_ca(sandbox_env):
    # A node in maintenance mode presents a self-signed certificate: the talosconfig's CA does not verify it.
    r = sandbox_env.talosctl_run("reset", "--graceful=false", "--reboot", "--system-labels-to-wipe=STATE",
                                 "--wait=false")
    assert r.returncode == 0, r.stderr
    sandbox_env.wait_stage("maintenance")
    res = run_cli(backup.main)
    assert res.code == ExitCode.NODE_UNREACHABLE, res
    assert "certificate" in res.err
    assert _snapshots(Path.cwd()) == []


@VIA
@pytest.mark.parametrize(
    "faults, code, code_talosctl",
    [
        ({"snapshot_truncate_bytes": 1000}, ExitCode.TRUNCATED_SNAPSHOT, ExitCode.TRUNCATED_SNAPSHOT),
        ({"snapshot_corrupt": True}, ExitCode.CORRUPT_SNAPSHOT, ExitCode.CORRUPT_SNAPSHOT),
        # The API path sees the connection drop mid-stream; talosctl reports the node's EOF.
        ({"die_mid_snapshot": True}, ExitCode.TRUNCATED_SNAPSHOT, ExitCode.NODE_UNREACHABLE),
    ],
    ids=["truncated", "corrupt", "node-dies"],
)
def test_bad_snapshot_from_node_leaves_nothing(sandbox_env, faults, code, code_talosctl, via):
    sandbox_env.set_faults(**faults)
    res = run_cli(backup.main, "--save-to-s3", *via)
    assert res.code == (code_talosctl if via else code), res
    assert _snapshots(Path.cwd()) == []
    assert _objects(sandbox_env) == [] and _pending(sandbox_env) == []


def test_bucket_missing(sandbox_env):
    res = run_cli(backup.main, "--save-to-s3", "--bucket", "no-such-bucket-for-dr")
    assert res.code == ExitCode.BUCKET_NOT_FOUND, res
    assert "does not exist" in res.err


def test_access_denied(sandbox_env, monkeypatch, tmp_path):
    # A second S3 server that enforces authentication: unknown credentials are refused with 403.
    from tests.support.tools import free_port, wait_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
        res = run_cli(backup.main, "--save-to-s3")
        assert res.code == ExitCode.ACCESS_DENIED, res
        assert "access denied" in res.err
    finally:
        proc.terminate()
        proc.wait(10)


def test_disk_full_during_snapshot(sandbox_env, tiny_fs):
    st = os.statvfs(tiny_fs)
    (tiny_fs / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 16 * 1024))  # leave 16 KiB free
    res = run_cli(backup.main, "--talos-dir", str(tiny_fs))
    assert res.code == ExitCode.DISK_FULL, res
    assert "no space left" in res.err
    assert list((tiny_fs / "snapshots").iterdir()) == []


@VIA
def test_ctrl_c_during_upload_leaves_no_object(sandbox_env, monkeypatch, via):
    # Big enough for a multipart upload (a single PUT already sent cannot be half-stored either way).
    for i in range(12):
        sandbox_env.put(f"/registry/configmaps/big/cm-{i}", "x" * 1_000_000)
    orig = backup.cli.Progress.__call__

    def interrupt(self, n):
        orig(self, n)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(backup.cli.Progress, "__call__", interrupt)
    res = run_cli(backup.main, "--save-to-s3", "--no-compress", *via)  # uncompressed, 12 MB is several parts
    assert res.code == ExitCode.INTERRUPTED, res
    assert "interrupted" in res.err
    assert _objects(sandbox_env) == [] and _pending(sandbox_env) == []
    if not via:  # one pass: the stream was not finished, so the local copy is not either
        assert _snapshots(Path.cwd()) == []
        return
    [local] = _snapshots(Path.cwd())  # the local snapshot, verified before the upload, stays
    verify_file(local)


def test_second_backup_fails_clearly_while_first_holds_the_lock(sandbox_env):
    with exclusive(Path(".talos") / backup.LOCK_NAME, "a restore"):
        res = run_cli(backup.main)
    assert res.code == ExitCode.LOCKED, res
    assert "a restore" in res.err and "wait" in res.err


def test_two_backups_at_once_both_complete(sandbox_env):
    sandbox_env.set_faults(snapshot_delay_seconds=1.0)
    cmd = [sys.executable, "-m", "dr.backup", "--wait-lock", "60"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    snaps = _snapshots(Path.cwd())
    assert len(snaps) == 2
    for s in snaps:
        verify_file(s)


def test_etcdctl_made_snapshot_is_accepted_by_integrity_check(real_snapshot):
    require_binary("etcdctl")
    assert verify_file(real_snapshot).size == real_snapshot.stat().st_size


def test_json_prints_one_document(sandbox_env):
    """--json on backup too; the narrative goes to stderr."""
    res = run_cli(backup.main, "--save-to-s3", "--json")
    assert res.code == 0, res
    import json

    doc = json.loads(res.out)
    [local] = _snapshots(Path.cwd())
    assert doc["ok"] is True and doc["snapshot"].endswith(local.name) and doc["sha256"] == local.read_bytes()[-32:].hex()
    assert doc["s3"].startswith(f"s3://{sandbox_env.bucket}/snapshots/{local.name}")
    bad = run_cli(backup.main, "--save-to-s3", "/nope/file.db", "--json")
    assert bad.code == ExitCode.NOT_FOUND and json.loads(bad.out)["exit_code"] == ExitCode.NOT_FOUND
