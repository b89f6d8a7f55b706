"""Snapshot formats end to end: snapshots people already have (talos-backup's zstd + age objects), made by the real `zstd` and
`age` CLIs, read by dr.list, dr.verify and dr.restore's fetch; and what dr.backup stores, read back by the CLIs.

talos-backup names objects `<prefix>/<cluster>-<RFC3339>.snap`, then appends `.zst` (compression) and `.age`
(encryption to an X25519 recipient): siderolabs/talos-backup pkg/talos/talos.go, pkg/compression/compression.go,
pkg/encryption/encryption.go, cmd/talos-backup/service/service.go (prefix defaults to the cluster name).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dr.commands import backup, verify
from dr.commands import list as dr_list
from dr.core.errors import ExitCode
from dr.core.integrity import verify_file
from tests.support.tools import require_binary, run_cli

pytestmark = pytest.mark.slow  # real etcd, moto, the CLIs

PREFIX = "talos-sandbox/"
TIMES = {  # RFC 3339 as Go formats it: Z, or a numeric offset
    "talos-sandbox-2026-11-20T01:00:00Z.snap": "2026-11-20T01:00:00Z",
    "talos-sandbox-2026-11-21T03:00:00+02:00.snap.zst": "2026-11-21T01:00:00Z",
    "talos-sandbox-2026-11-22T01:00:00Z.snap.age": "2026-11-22T01:00:00Z",
    "talos-sandbox-2026-11-23T01:00:00Z.snap.zst.age": "2026-11-23T01:00:00Z",
}


@pytest.fixture
def age_key(tmp_path) -> tuple[Path, str]:
    key = tmp_path / "age" / "key.txt"
    key.parent.mkdir()
    subprocess.run([require_binary("age-keygen"), "-o", str(key)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True).stdout.strip()
    return key, public


def talos_backup_bytes(plain: bytes, name: str, recipient: str) -> bytes:
    """What talos-backup would upload for ``name``: zstd, then age, with the real CLIs."""
    data = plain
    if ".zst" in name:
        data = subprocess.run([require_binary("zstd"), "-q", "-c"], input=data, capture_output=True, check=True).stdout
    if name.endswith(".age"):
        data = subprocess.run([require_binary("age"), "-r", recipient], input=data, capture_output=True,
                              check=True).stdout
    return data


@pytest.fixture
def work(tmp_path, monkeypatch):
    require_binary("etcd")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    for k in ("DR_BUCKET", "DR_STACK_OUTPUTS_FILE", "DR_TALOS_DIR", "DR_SNAPSHOT_PREFIX", "DR_AGE_IDENTITY_FILE",
              "DR_AGE_RECIPIENTS"):
        monkeypatch.delenv(k, raising=False)
    t = tmp_path / "tmp"
    t.mkdir()
    return t


@pytest.fixture
def talos_backup_bucket(s3_client, bucket, real_snapshot, age_key):
    _, public = age_key
    plain = real_snapshot.read_bytes()
    for name in TIMES:
        s3_client.put_object(Bucket=bucket, Key=PREFIX + name, Body=talos_backup_bytes(plain, name, public))
    return bucket


def test_list_shows_talos_backup_objects_with_the_time_from_their_name(work, talos_backup_bucket, monkeypatch):
    res = run_cli(dr_list.main, "--bucket", talos_backup_bucket, "--prefix", PREFIX, "--json")
    assert res.code == 0, res
    rows = {r["s3_name"]: r for r in json.loads(res.out)["snapshots"]}
    assert set(rows) == set(TIMES)
    for name, taken in TIMES.items():
        assert rows[name]["taken_at"] == taken and rows[name]["scheme"] == "talos-backup"
        assert rows[name]["cluster"] == "talos-sandbox"
    assert rows["talos-sandbox-2026-11-23T01:00:00Z.snap.zst.age"]["format"] == "zstd+age"
    assert rows["talos-sandbox-2026-11-21T03:00:00+02:00.snap.zst"]["format"] == "zstd"
    # DR_SNAPSHOT_PREFIX does the same as --prefix
    monkeypatch.setenv("DR_SNAPSHOT_PREFIX", "talos-sandbox")
    env = run_cli(dr_list.main, "--bucket", talos_backup_bucket, "--json")
    assert env.code == 0 and json.loads(env.out)["total"] == 4, env


@pytest.mark.parametrize("name", list(TIMES))
def test_verify_proves_each_talos_backup_object(work, talos_backup_bucket, age_key, name):
    key, _ = age_key
    uri = f"s3://{talos_backup_bucket}/{PREFIX}{name}"
    res = run_cli(verify.main, uri, "--identity", str(key), "--json", "--tmp-dir", str(work))
    assert res.code == 0, res
    rep = json.loads(res.out)
    assert rep["ok"] and rep["total_keys"] >= 6
    assert rep["format"] == {"": "plain", ".zst": "zstd", ".age": "age", ".zst.age": "zstd+age"}[
        name.split(".snap", 1)[1]]


def test_an_encrypted_object_without_identity_says_so_with_its_own_code(work, talos_backup_bucket):
    uri = f"s3://{talos_backup_bucket}/{PREFIX}talos-sandbox-2026-11-23T01:00:00Z.snap.zst.age"
    res = run_cli(verify.main, uri, "--tmp-dir", str(work))
    assert res.code == ExitCode.ENCRYPTED, res
    assert "encrypted" in res.err and "--identity" in res.err and "corrupt" not in res.err
    assert len([ln for ln in res.err.splitlines() if ln.strip()]) <= 2  # the restore line and its hint
    doc = run_cli(verify.main, uri, "--json", "--tmp-dir", str(work))
    assert doc.code == ExitCode.ENCRYPTED and json.loads(doc.out)["exit_code"] == ExitCode.ENCRYPTED
    assert list(work.iterdir()) == []  # nothing left behind


def test_another_identity_is_refused_as_encrypted_not_corrupt(work, talos_backup_bucket, tmp_path):
    other = tmp_path / "other.txt"
    subprocess.run(["age-keygen", "-o", str(other)], check=True, capture_output=True)
    uri = f"s3://{talos_backup_bucket}/{PREFIX}talos-sandbox-2026-11-22T01:00:00Z.snap.age"
    res = run_cli(verify.main, uri, "--identity", str(other), "--tmp-dir", str(work))
    assert res.code == ExitCode.ENCRYPTED, res
    assert "other recipients" in res.err


def test_latest_under_a_talos_backup_prefix_is_the_newest_by_name(work, talos_backup_bucket, age_key, monkeypatch):
    key, _ = age_key
    monkeypatch.setenv("DR_AGE_IDENTITY_FILE", str(key))
    res = run_cli(verify.main, "latest", "--bucket", talos_backup_bucket, "--prefix", PREFIX, "--json",
                  "--tmp-dir", str(work))
    assert res.code == 0, res
    assert json.loads(res.out)["source"].endswith("talos-sandbox-2026-11-23T01:00:00Z.snap.zst.age")


def test_a_local_compressed_file_is_named_as_such(work, real_snapshot, tmp_path, age_key):
    """A local .zst or .age file is decoded, not called 'not an etcd snapshot'."""
    key, public = age_key
    enc = tmp_path / "talos-sandbox-2026-11-23T01:00:00Z.snap.zst.age"
    enc.write_bytes(talos_backup_bytes(real_snapshot.read_bytes(), enc.name, public))
    res = run_cli(verify.main, str(enc), "--tmp-dir", str(work))
    assert res.code == ExitCode.ENCRYPTED and "age-encrypted" in res.err, res
    ok = run_cli(verify.main, str(enc), "--identity", str(key), "--json", "--tmp-dir", str(work))
    assert ok.code == 0 and json.loads(ok.out)["format"] == "zstd+age", ok


def test_backup_stores_what_the_clis_read_back(sandbox_env, age_key, monkeypatch):
    """dr.backup --save-to-s3 with recipients: the object is `<name>.db.zst.age`, and `age -d | zstd -d` turns it
    into exactly the local snapshot, which stays a plain .db for `talosctl bootstrap --recover-from`."""
    from dr.adapters import s3

    key, public = age_key
    sb = sandbox_env
    monkeypatch.setenv("DR_AGE_RECIPIENTS", public)
    res = run_cli(backup.main, "--save-to-s3")
    assert res.code == 0, res
    [local] = sorted((Path.cwd() / ".talos" / "snapshots").glob("etcd-snapshot-*.db"))
    verify_file(local)
    client = s3.make_client(sb.region)
    obj_key = f"snapshots/{local.name}.zst.age"
    raw = client.get_object(Bucket=sb.bucket, Key=obj_key)["Body"].read()
    plain = subprocess.run(f"age -d -i {key} | zstd -q -d", shell=True, input=raw, capture_output=True,
                           check=True).stdout
    assert plain == local.read_bytes()
    info = s3.head_snapshot(client, sb.bucket, obj_key)
    assert info.metadata[s3.META_FORMAT] == "zstd+age"
    # the plaintext's SHA-256 and size: metadata when known up front, tags when learnt at the end of a one-pass stream
    facts = {**info.tags, **info.metadata}
    assert facts[s3.META_SHA256] == plain[-32:].hex() and int(facts[s3.META_SIZE]) == len(plain)
    assert len(raw) < len(plain)  # mostly free bbolt pages compress
    assert "age-encrypted" in res.out
