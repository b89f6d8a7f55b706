"""dr.verify against snapshots made by `etcdctl snapshot save` itself (not this project's code), a real etcd, and
moto's S3 server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dr.adapters import etcdlocal, s3
from dr.adapters.store import S3Store
from dr.commands import verify
from dr.core.errors import AccessDenied, EtcdError, ExitCode
from dr.core.integrity import iter_file
from tests.support.tools import require_binary, run_cli, start_etcd

pytestmark = pytest.mark.slow  # the module's fixture starts an etcd (~1.2 s); most tests use it and a throwaway etcd

# What the "before" snapshot holds, by resource type as dr.verify groups it.
BEFORE = {
    "/registry/namespaces/default": "ns-default",
    "/registry/namespaces/demo": "ns-demo",
    "/registry/namespaces/kube-system": "ns-kube-system",
    "/registry/configmaps/default/a": "cm-a",
    "/registry/configmaps/demo/b": "cm-b",
    "/registry/configmaps/demo/c": "cm-c",
    "/registry/secrets/demo/token": "k8s:enc:secretbox:v1:key1:xyz",
    "/registry/secrets/demo/tls": "k8s:enc:secretbox:v1:key1:abc",
    "/registry/deployments/demo/web": '{"replicas": 2}',
    "/registry/services/specs/default/kubernetes": "svc",
    "/registry/services/endpoints/default/kubernetes": "ep",
    "/registry/minions/node-1": "node",
    "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com": "crd",
    "/registry/example.com/widgets/demo/w1": "widget",
    "compact_rev_key": "42",
}
BEFORE_TYPES = {
    "namespaces": 3, "configmaps": 3, "secrets": 2, "deployments": 1, "services": 1, "endpoints": 1, "nodes": 1,
    "customresourcedefinitions.apiextensions.k8s.io": 1, "widgets.example.com": 1, "(outside /registry)": 1,
}


def _status(path: Path) -> dict:
    out = subprocess.run(["etcdctl", "snapshot", "status", str(path), "-w", "json"], check=True,
                         capture_output=True, env={**os.environ, "ETCDCTL_API": "3"}).stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def snaps(tmp_path_factory):
    """Two snapshots from etcdctl: ``before`` (BEFORE, with history: rewrites and a delete) and ``after`` (changed)."""
    base = tmp_path_factory.mktemp("verify-etcd")
    e = start_etcd(base)
    try:
        e.put("/registry/configmaps/default/a", "old value")  # history: the value below replaces it
        e.put("/registry/pods/demo/gone", "deleted before the snapshot")
        e.ctl("del", "/registry/pods/demo/gone")
        for k, v in BEFORE.items():
            e.put(k, v)
        before = e.snapshot(base / "before.db")
        # after: 2 configmaps added, 1 secret removed, the deployment changed, a namespace rewritten unchanged.
        e.put("/registry/configmaps/demo/d", "cm-d")
        e.put("/registry/configmaps/kube-system/e", "cm-e")
        e.ctl("del", "/registry/secrets/demo/tls")
        e.put("/registry/deployments/demo/web", '{"replicas": 3}')
        e.put("/registry/namespaces/demo", "ns-demo")
        after = e.snapshot(base / "after.db")
        empty_base = base / "empty"
        empty_base.mkdir()
        e2 = start_etcd(empty_base)
        try:
            e2.put("/not-kubernetes/x", "1")
            no_registry = e2.snapshot(base / "no-registry.db")
        finally:
            e2.proc.terminate()
            e2.proc.wait(10)
    finally:
        e.proc.terminate()
        e.proc.wait(10)
    return {"before": before, "after": after, "no_registry": no_registry}


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A fresh cwd, a private tmp dir for the throwaway etcd, and no bucket or stack configured."""
    require_binary("etcd")
    require_binary("etcdctl")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    for k in ("DR_BUCKET", "DR_STACK_OUTPUTS_FILE", "DR_TALOS_DIR"):
        monkeypatch.delenv(k, raising=False)
    t = tmp_path / "tmp"
    t.mkdir()
    return t


def _copy(src: Path, dest: Path) -> Path:
    dest.write_bytes(src.read_bytes())
    return dest


def _etcd_processes_using(path: Path) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if str(path).encode() in cmd and b"etcd" in cmd:
                pids.append(int(d.name))
    return pids


@pytest.mark.parametrize("key, expected", [
    (b"/registry/pods/ns/p", "pods"),
    (b"/registry/namespaces/default", "namespaces"),
    (b"/registry/minions/node-1", "nodes"),
    (b"/registry/services/specs/ns/s", "services"),
    (b"/registry/services/endpoints/ns/s", "endpoints"),
    (b"/registry/apiextensions.k8s.io/customresourcedefinitions/x.example.com", "customresourcedefinitions."
                                                                                "apiextensions.k8s.io"),
    (b"/registry/apiregistration.k8s.io/apiservices/v1.apps", "apiservices.apiregistration.k8s.io"),
    (b"/registry/ranges/serviceips", "ranges"),
    (b"compact_rev_key", "(outside /registry)"),
    (b"/registryx/a", "(outside /registry)"),
])
def test_resource_type(key, expected):
    assert verify.resource_type(key) == expected


def test_counts_match_etcdctl_and_what_was_written(snaps, work, tmp_path):
    snap = _copy(snaps["before"], tmp_path / "etcd-snapshot-20260101T000000Z.db")
    status = _status(snap)
    res = run_cli(verify.main, str(snap), "--json", "--tmp-dir", str(work))
    assert res.code == 0, res
    rep = json.loads(res.out)
    assert rep["ok"] is True
    assert rep["revision"] == status["revision"]
    assert rep["db_entries"] == status["totalKey"]
    assert rep["total_keys"] == len(BEFORE)  # live keys: the deleted pod and old values do not count
    assert rep["registry_keys"] == len(BEFORE) - 1
    assert rep["resources"] == BEFORE_TYPES
    assert rep["sha256"] == snap.read_bytes()[-32:].hex()
    # the pass is recorded next to the file, for this exact file
    cat = json.loads((tmp_path / verify.CATALOG_NAME).read_text())["snapshots"][snap.name]
    assert cat["revision"] == status["revision"] and cat["keys"] == len(BEFORE)
    # tied to the SHA-256 of the file's bytes (the bytes, not size and mtime, decide whether it still stands)
    assert cat["size"] == snap.stat().st_size and cat["sha256"] == hashlib.sha256(snap.read_bytes()).hexdigest()
    assert list(work.iterdir()) == []  # the throwaway etcd's directory and the download folder are gone


def test_text_output_names_counts_and_where_it_was_recorded(snaps, work, tmp_path):
    snap = _copy(snaps["before"], tmp_path / "s.db")
    res = run_cli(verify.main, str(snap), "--tmp-dir", str(work))
    assert res.code == 0, res
    rev = _status(snap)["revision"]
    assert f"verified: {snap} restores (revision {rev}, {len(BEFORE)} keys" in res.out
    assert "customresourcedefinitions.apiextensions.k8s.io" in res.out
    assert f"recorded as {tmp_path / verify.CATALOG_NAME}" in res.out


def test_against_shows_per_type_differences(snaps, work, tmp_path):
    res = run_cli(verify.main, str(snaps["after"]), "--against", str(snaps["before"]), "--json",
                  "--tmp-dir", str(work))
    assert res.code == 0, res
    rep = json.loads(res.out)
    diff = {t: (d["added"], d["removed"], d["changed"]) for t, d in rep["against"]["resources"].items()
            if d["added"] or d["removed"] or d["changed"]}
    assert diff == {"configmaps": (2, 0, 0), "secrets": (0, 1, 0), "deployments": (0, 0, 1)}
    r = rep["against"]["resources"]
    assert r["configmaps"]["examples"]["added"] == ["/registry/configmaps/demo/d", "/registry/configmaps/kube-system/e"]
    assert r["secrets"]["examples"]["removed"] == ["/registry/secrets/demo/tls"]
    assert r["deployments"]["examples"]["changed"] == ["/registry/deployments/demo/web"]
    assert r["namespaces"]["unchanged"] == 3  # rewritten with the same value: not a change
    assert rep["against"]["resources_count"] == BEFORE_TYPES
    assert rep["resources"]["configmaps"] == 5 and rep["resources"]["secrets"] == 1
    assert rep["against"]["revision"] == _status(snaps["before"])["revision"]
    assert rep["revision"] == _status(snaps["after"])["revision"]
    text = run_cli(verify.main, str(snaps["after"]), "--against", str(snaps["before"]), "--tmp-dir", str(work))
    assert text.code == 0, text
    assert "+ /registry/configmaps/demo/d" in text.out and "- /registry/secrets/demo/tls" in text.out
    assert "~ /registry/deployments/demo/web" in text.out
    same = run_cli(verify.main, str(snaps["before"]), "--against", str(snaps["before"]), "--tmp-dir", str(work))
    assert same.code == 0 and "no differences" in same.out
    assert list(work.iterdir()) == []


def _truncated(data: bytes) -> bytes:
    return data[:-100]


def _corrupt(data: bytes) -> bytes:
    b = bytearray(data)
    b[len(b) // 2] ^= 0xFF
    return bytes(b)


@pytest.mark.parametrize("damage, code, words", [
    (lambda d: b"", ExitCode.EMPTY_SNAPSHOT, "is empty"),
    (_truncated, ExitCode.TRUNCATED_SNAPSHOT, "is truncated"),
    (_corrupt, ExitCode.CORRUPT_SNAPSHOT, "is corrupt"),
    (lambda d: b"apiVersion: v1\nkind: Config\n" * 100, ExitCode.NOT_A_SNAPSHOT, "not an etcd snapshot"),
    (lambda d: os.urandom(4096 + 32), ExitCode.NOT_A_SNAPSHOT, "not an etcd snapshot"),
], ids=["empty", "truncated", "corrupt", "yaml", "random"])
def test_damaged_files_fail_with_their_own_code(snaps, work, tmp_path, damage, code, words):
    bad = tmp_path / "etcd-snapshot-20260101T000000Z.db"
    bad.write_bytes(damage(snaps["before"].read_bytes()))
    res = run_cli(verify.main, str(bad), "--tmp-dir", str(work))
    assert res.code == code, res
    assert words in res.err and str(bad) in res.err
    assert "verified:" not in res.out
    assert not (tmp_path / verify.CATALOG_NAME).exists()
    assert list(work.iterdir()) == []
    assert _etcd_processes_using(work) == []


def test_failure_in_json_mode_still_prints_json(snaps, work, tmp_path):
    bad = tmp_path / "x.db"
    bad.write_bytes(_truncated(snaps["before"].read_bytes()))
    res = run_cli(verify.main, str(bad), "--json", "--tmp-dir", str(work))
    assert res.code == ExitCode.TRUNCATED_SNAPSHOT
    doc = json.loads(res.out)
    assert doc["ok"] is False and doc["exit_code"] == ExitCode.TRUNCATED_SNAPSHOT and "truncated" in doc["error"]


def test_valid_trailer_over_a_damaged_database_is_corrupt(snaps, work, tmp_path):
    import hashlib

    data = bytearray(snaps["before"].read_bytes()[:-32])
    for page in range(2, len(data) // 4096):  # wreck the page type of every page holding Kubernetes keys
        if b"/registry/" in data[page * 4096:(page + 1) * 4096]:
            data[page * 4096 + 8: page * 4096 + 10] = b"\x40\x00"
    bad = tmp_path / "rehashed.db"
    bad.write_bytes(bytes(data) + hashlib.sha256(data).digest())
    res = run_cli(verify.main, str(bad), "--tmp-dir", str(work))
    assert res.code == ExitCode.CORRUPT_SNAPSHOT, res
    assert "etcd cannot read" in res.err
    assert list(work.iterdir()) == []


def test_snapshot_without_kubernetes_data_is_not_a_pass(snaps, work):
    res = run_cli(verify.main, str(snaps["no_registry"]), "--tmp-dir", str(work))
    assert res.code == ExitCode.VERIFY_MISMATCH, res
    assert "no Kubernetes objects" in res.err
    assert list(work.iterdir()) == []


def test_missing_etcd_is_an_error_not_a_pass(snaps, work, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    res = run_cli(verify.main, str(snaps["before"]), "--tmp-dir", str(work))
    assert res.code == ExitCode.ETCD_MISSING, res
    assert "etcd, etcdutl and etcdctl not found" in res.err and "make etcd" in res.err


@pytest.mark.parametrize("exc", [KeyboardInterrupt, EtcdError("boom", "hint"), RuntimeError("bug")],
                         ids=["ctrl-c", "etcd-error", "bug"])
def test_throwaway_etcd_is_gone_after_interrupt_or_error(snaps, work, monkeypatch, exc):
    seen = {}

    def explode(etcd, content):
        seen["pid"], seen["dir"] = etcd.proc.pid, etcd.dir
        assert etcd.proc.poll() is None and etcd.dir.is_dir()  # etcd really was up
        raise exc

    monkeypatch.setattr(verify, "read_back", explode)
    res = run_cli(verify.main, str(snaps["before"]), "--tmp-dir", str(work))
    expected = {KeyboardInterrupt: ExitCode.INTERRUPTED, EtcdError: ExitCode.ETCD_ERROR,
                RuntimeError: ExitCode.ERROR}[exc if isinstance(exc, type) else type(exc)]
    assert res.code == expected, res
    with pytest.raises(ProcessLookupError):
        os.kill(seen["pid"], 0)
    assert not seen["dir"].exists()
    assert list(work.iterdir()) == []
    assert _etcd_processes_using(work) == []


def test_etcd_dies_with_a_killed_verify_and_its_dir_is_swept(snaps, work, tmp_path):
    """SIGKILL skips every finally: etcd must still die (parent-death signal) and the next run removes the dir."""
    script = tmp_path / "hang.py"
    script.write_text(
        "import sys, time\n"
        "from pathlib import Path\n"
        "from dr.adapters.etcdlocal import ThrowawayEtcd\n"
        "with ThrowawayEtcd(Path(sys.argv[1]), base_dir=Path(sys.argv[2])) as e:\n"
        "    print(e.proc.pid, e.dir, flush=True)\n"
        "    time.sleep(60)\n")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([os.sys.executable, str(script), str(snaps["before"]), str(work)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(root)})
    line = proc.stdout.readline().split()
    etcd_pid, etcd_dir = int(line[0]), Path(line[1])
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 10
    while _etcd_processes_using(work) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _etcd_processes_using(work) == [], f"etcd {etcd_pid} outlived its killed parent"
    assert etcd_dir.is_dir()  # nothing could remove it ...
    assert etcdlocal.sweep_stale(work) == [etcd_dir]  # ... until the next run
    assert not etcd_dir.exists()


def test_sweep_keeps_directories_of_live_runs(work):
    mine = work / (etcdlocal.DIR_PREFIX + "live")
    mine.mkdir()
    (mine / etcdlocal.OWNER_FILE).write_text(str(os.getpid()))
    assert etcdlocal.sweep_stale(work) == []
    assert mine.is_dir()


# --- S3 -------------------------------------------------------------------------------------------------------


def _upload(client, bucket, path: Path, name: str) -> str:
    meta = s3.snapshot_metadata(taken_at=datetime.now(UTC), cluster="test", source="dr.backup",
                          sha256=path.read_bytes()[-32:].hex(), size=path.stat().st_size,
                          revision=_status(path)["revision"])
    with open(path, "rb") as f:
        entry = S3Store(client, bucket, "snapshots/").put(iter_file(f), name, metadata=meta)
    assert entry.key == f"snapshots/{name}"
    return entry.key


def test_s3_latest_is_verified_and_tagged(snaps, work, s3_client, bucket):
    _upload(s3_client, bucket, snaps["before"], "etcd-snapshot-20260101T000000Z.db")
    key = _upload(s3_client, bucket, snaps["after"], "etcd-snapshot-20260102T000000Z.db")
    res = run_cli(verify.main, "latest", "--bucket", bucket, "--json", "--tmp-dir", str(work))
    assert res.code == 0, res
    rep = json.loads(res.out)
    assert rep["source"] == f"s3://{bucket}/{key}"
    assert any("recorded at upload matches" in c for c in rep["checks"])
    info = s3.head_snapshot(s3_client, bucket, key)
    assert info.tags[s3.TAG_VERIFIED_REVISION] == str(_status(snaps["after"])["revision"])
    assert info.tags[s3.TAG_VERIFIED_KEYS] == str(rep["total_keys"])
    assert info.tags[s3.TAG_VERIFIED_AT] == rep["verified_at"]
    older = s3.head_snapshot(s3_client, bucket, "snapshots/etcd-snapshot-20260101T000000Z.db")
    assert s3.TAG_VERIFIED_AT not in older.tags
    assert list(work.iterdir()) == []  # the download went away with the throwaway etcd


def test_s3_object_damaged_after_upload_is_corrupt_and_not_tagged(snaps, work, s3_client, bucket):
    key = "snapshots/etcd-snapshot-20260101T000000Z.db"
    s3_client.put_object(Bucket=bucket, Key=key, Body=_corrupt(snaps["before"].read_bytes()))
    res = run_cli(verify.main, f"s3://{bucket}/{key}", "--tmp-dir", str(work))
    assert res.code == ExitCode.CORRUPT_SNAPSHOT, res
    assert s3.TAG_VERIFIED_AT not in s3.head_snapshot(s3_client, bucket, key).tags
    assert list(work.iterdir()) == []


def test_s3_object_replaced_by_another_snapshot_is_caught(snaps, work, s3_client, bucket):
    """A whole, valid snapshot whose SHA-256 is not the one recorded at upload: not the object that was uploaded."""
    key = "snapshots/etcd-snapshot-20260101T000000Z.db"
    meta = s3.snapshot_metadata(sha256="0" * 64, size=None, taken_at=datetime.now(UTC), cluster="test")
    s3_client.put_object(Bucket=bucket, Key=key, Body=snaps["before"].read_bytes(), Metadata=meta)
    res = run_cli(verify.main, f"s3://{bucket}/{key}", "--tmp-dir", str(work))
    assert res.code == ExitCode.CORRUPT_SNAPSHOT, res
    assert "recorded at upload" in res.err


def test_s3_missing_object_is_not_found(work, s3_client, bucket):
    res = run_cli(verify.main, "latest", "--bucket", bucket, "--tmp-dir", str(work))
    assert res.code == ExitCode.NOT_FOUND, res
    assert "talos-dr backup --save-to-s3" in res.err


def test_reading_in_small_pages_sees_every_key_once(snaps, work):
    with etcdlocal.ThrowawayEtcd(snaps["before"], base_dir=work) as e:
        whole = list(e.iter_kvs(keys_only=False, page=1000))
        paged = list(e.iter_kvs(keys_only=False, page=2))
        keys = [kv.key for kv in e.iter_kvs(keys_only=True, page=3)]
    assert [kv.key.decode() for kv in whole] == sorted(BEFORE)
    assert paged == whole and keys == [kv.key for kv in whole]
    assert {kv.key.decode(): kv.value.decode() for kv in whole} == BEFORE
    assert list(work.iterdir()) == []


def test_against_a_damaged_snapshot_fails_with_its_code(snaps, work, tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(_corrupt(snaps["before"].read_bytes()))
    res = run_cli(verify.main, str(snaps["after"]), "--against", str(bad), "--tmp-dir", str(work))
    assert res.code == ExitCode.CORRUPT_SNAPSHOT, res
    assert str(bad) in res.err
    assert list(work.iterdir()) == []


def test_a_pass_that_cannot_be_recorded_is_a_warning(snaps, work, s3_client, bucket, monkeypatch):
    key = _upload(s3_client, bucket, snaps["before"], "etcd-snapshot-20260101T000000Z.db")

    def denied(*a, **kw):
        raise AccessDenied(f"tagging s3://{bucket}/{key} failed: access denied (AccessDenied)", "check credentials")

    monkeypatch.setattr(s3, "set_tags", denied)
    res = run_cli(verify.main, f"s3://{bucket}/{key}", "--tmp-dir", str(work))
    assert res.code == 0, res
    assert "warning: the snapshot verified, but recording the result failed" in res.err
    assert "recorded as" not in res.out and "verified: s3://" in res.out


def test_a_symlinked_catalog_is_not_followed(snaps, work, tmp_path):
    """Security L3: ``.verified.json`` next to a file in a shared folder may be a planted link; it is refused, the
    pass is a warning, and the link's target is untouched. A real catalog is written 0600 and nothing ``.part``."""
    folder = tmp_path / "shared"
    folder.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (folder / verify.CATALOG_NAME).symlink_to(victim)
    snap = _copy(snaps["before"], folder / "s.db")
    res = run_cli(verify.main, str(snap), "--tmp-dir", str(work))
    assert res.code == 0, res
    assert "recording the result failed" in res.err and "symbolic link" in res.err
    assert victim.read_text() == "keep" and (folder / verify.CATALOG_NAME).is_symlink()
    (folder / verify.CATALOG_NAME).unlink()
    res = run_cli(verify.main, str(snap), "--tmp-dir", str(work))
    assert res.code == 0, res
    assert (folder / verify.CATALOG_NAME).stat().st_mode & 0o777 == 0o600
    assert [p.name for p in folder.iterdir() if p.name.endswith(".part")] == []


def test_sigterm_cleans_up_like_ctrl_c(snaps, work, tmp_path):
    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys, time\n"
        "import dr.commands.verify as v\n"
        "def hang(etcd, content):\n"
        "    print(etcd.proc.pid, etcd.dir, flush=True)\n"
        "    time.sleep(60)\n"
        "v.read_back = hang\n"
        "v.sigterm_as_interrupt()\n"
        "sys.exit(v.main(sys.argv[1:]))\n")
    proc = subprocess.Popen([os.sys.executable, "-c", code, str(snaps["before"]), "--tmp-dir", str(work)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(root)})
    pid, folder = proc.stdout.readline().split()
    proc.terminate()
    assert proc.wait(30) == ExitCode.INTERRUPTED
    assert "interrupted" in proc.stderr.read()
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)
    assert not Path(folder).exists() and list(work.iterdir()) == []


# --- a failed verification takes back what claimed the snapshot was good ------------

def test_a_failed_verification_clears_forged_verified_tags(snaps, work, s3_client, bucket):
    key = "snapshots/etcd-snapshot-20260101T000000Z.db"
    s3_client.put_object(Bucket=bucket, Key=key, Body=_corrupt(snaps["before"].read_bytes()),
                         Tagging="retention=hourly&verified-at=2026-12-06T00%3A00%3A00Z&verified-keys=9")
    res = run_cli(verify.main, f"s3://{bucket}/{key}", "--tmp-dir", str(work))
    assert res.code == ExitCode.CORRUPT_SNAPSHOT, res
    assert "earlier pass recorded" in res.err and "verified-at" in res.err
    tags = s3.head_snapshot(s3_client, bucket, key).tags
    assert tags == {"retention": "hourly"}, "the tier stays; every verified-* tag is gone"


def test_a_failed_verification_forgets_the_local_record(snaps, work, tmp_path):
    path = _copy(snaps["before"], tmp_path / "etcd-snapshot-20260101T000000Z.db")
    assert run_cli(verify.main, str(path), "--tmp-dir", str(work)).code == 0
    catalog = tmp_path / verify.CATALOG_NAME
    assert path.name in json.loads(catalog.read_text())["snapshots"]
    path.write_bytes(_corrupt(path.read_bytes()))
    res = run_cli(verify.main, str(path), "--tmp-dir", str(work))
    assert res.code == ExitCode.CORRUPT_SNAPSHOT, res
    assert path.name not in json.loads(catalog.read_text())["snapshots"]


def test_a_rewritten_sha256_tag_is_a_warning_and_the_snapshot_still_verifies(snaps, work, s3_client, bucket):
    with open(snaps["after"], "rb") as f:
        entry = S3Store(s3_client, bucket, "snapshots/").put(
            iter_file(f), "etcd-snapshot-20260102T000000Z.db",
            metadata=s3.snapshot_metadata(taken_at=datetime.now(UTC), cluster="test", source="dr.backup"))
    s3.set_tags(s3_client, bucket, entry.key, {s3.META_SHA256: "0" * 64})
    res = run_cli(verify.main, "latest", "--bucket", bucket, "--tmp-dir", str(work))
    assert res.code == 0, res
    assert "was changed after upload" in res.err
