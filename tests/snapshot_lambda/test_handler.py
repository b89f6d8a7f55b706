"""The Lambda handler in-process: simulated apid (real etcd) → moto S3 + Secrets Manager on loopback."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime

import pytest

from dr.adapters import s3
from dr.adapters.store import S3Store, fetch
from dr.core import naming
from dr.core.credentials import certificate_roles
from dr.core.errors import ConfigError, NodeError, NodeUnreachable, TruncatedSnapshot
from dr.core.integrity import verify_file
from sandbox import etcd as sandbox_etcd
from sandbox.apid import SimulatedApid
from snapshot_lambda import handler as lh
from tests.support.talos_api import KEYS, no_leftovers
from tests.support.tools import free_port, require_binary, start_etcd


@pytest.mark.slow
def test_handler_uploads_a_verified_snapshot_that_restores(runner_env, s3_client, bucket, tmp_path, apid):
    out = lh.handler({}, None)
    key = out["key"]
    # compressed by default, under the name dr.backup gives the S3 copy
    assert key.startswith("snapshots/etcd-snapshot-") and key.endswith(".db.zst") and out["format"] == "zstd"
    parsed = naming.parse(key)
    assert parsed is not None and parsed.compressed and not parsed.encrypted
    dest = tmp_path / "dl.db"
    store = S3Store(s3_client, bucket, "snapshots/")
    digest, layers = fetch(store, store.stat(key), dest)
    assert layers.compressed and not layers.encrypted
    assert digest.content_sha256 == out["sha256"] and digest.size == out["size"]
    assert out["stored_size"] < out["size"]
    assert dest.read_bytes() == apid.last_snapshot.read_bytes()
    info = s3.head_snapshot(s3_client, bucket, key)
    assert info.metadata[s3.META_CLUSTER] == "sandbox" and info.metadata[s3.META_SOURCE] == "schedule"
    assert info.metadata[s3.META_FORMAT] == "zstd"
    facts = s3.object_facts(s3.head_snapshot(s3_client, bucket, key))
    assert facts[s3.META_SHA256] == out["sha256"]
    assert apid.calls[-3] == ("os:etcd:backup", "ok")  # the least-privilege role did it (then EtcdStatus, AlarmList)
    data = tmp_path / "restored"
    subprocess.run(["etcdctl", "snapshot", "restore", str(dest), "--data-dir", str(data)], check=True,
                   capture_output=True, env={**os.environ, "ETCDCTL_API": "3"})
    etcd = _etcd_on(data, tmp_path)
    try:
        assert set(KEYS) <= set(etcd.keys("/registry/"))
    finally:
        etcd.proc.terminate()
        etcd.proc.wait(10)


def _etcd_on(data_dir, tmp_path):
    """Start etcd on a restored data dir (the restore's default member name and peer URL)."""
    import subprocess as sp

    from tests.support.tools import Etcd, wait_port

    cport = free_port()
    proc = sp.Popen(["etcd", "--data-dir", str(data_dir), "--listen-client-urls", f"http://127.0.0.1:{cport}",
                     "--advertise-client-urls", f"http://127.0.0.1:{cport}",
                     "--listen-peer-urls", "http://127.0.0.1:0"],
                    stdout=open(tmp_path / "r.log", "wb"), stderr=sp.STDOUT)
    wait_port(cport)
    return Etcd(f"http://127.0.0.1:{cport}", data_dir, proc)


def test_names_match_dr_backup(runner_env, s3_client):
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    res = lh.run(now=now)
    assert res.key == "snapshots/etcd-snapshot-20260102T030405Z.db.zst"
    listed = S3Store(s3_client, runner_env[lh.ENV_BUCKET], "snapshots/").list()
    assert [e.key for e in listed] == [res.key] and listed[0].name.plain == "etcd-snapshot-20260102T030405Z.db"


@pytest.mark.parametrize("fault,error", [("cut", TruncatedSnapshot), ("truncate", TruncatedSnapshot),
                                         ("error", NodeError)])
def test_failures_leave_nothing_behind(runner_env, apid, s3_client, bucket, fault, error):
    apid.fault, apid.fault_after = fault, 8192
    with pytest.raises(error):
        lh.handler({}, None)
    assert no_leftovers(s3_client, bucket) == ([], [])


def test_reader_role_is_refused_and_nothing_uploaded(runner_env, os_ca, make_creds, s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key=runner_env[lh.ENV_CREDENTIAL_KEY],
                         Body=make_creds("os:reader").to_json().encode())
    with pytest.raises(NodeError) as ei:
        lh.handler({}, None)
    assert "os:etcd:backup" in str(ei.value)
    assert no_leftovers(s3_client, bucket) == ([], [])


def test_the_credential_comes_from_its_object_in_the_bucket(runner_env, s3_client, bucket, os_ca):
    creds = lh.read_credentials(bucket, runner_env[lh.ENV_CREDENTIAL_KEY], s3_client)
    assert certificate_roles(creds.cert_pem) == ["os:etcd:backup"] and creds.ca_pem == os_ca[0]
    assert lh.ENV_CREDENTIAL_KEY == "TALOS_DR_CREDENTIAL_KEY" and not hasattr(lh, "ENV_SECRET_ID")


def test_every_run_logs_the_days_the_certificate_has_left(runner_env, caplog):
    import json

    caplog.set_level("INFO", logger="talos-dr.schedule")
    lh.run()
    (event,) = [json.loads(r.getMessage()) for r in caplog.records if "credential-expiry" in r.getMessage()]
    assert event["event"] == "credential-expiry" and 180 <= event["days_left"] <= 365
    assert event["not_after"].endswith("Z")


def test_a_certificate_about_to_expire_is_a_warning(make_creds, caplog):
    creds = make_creds()  # valid for one more day
    caplog.set_level("INFO", logger="talos-dr.schedule")
    left = lh.log_credential_expiry(creds, datetime.now(UTC))
    assert left is not None and 0 < left < 2
    (record,) = [r for r in caplog.records if "credential-expiry" in r.getMessage()]
    assert record.levelname == "WARNING" and "pulumi up" in record.getMessage()


def test_a_credential_object_that_is_not_one_is_refused(runner_env, s3_client, bucket):
    key = runner_env[lh.ENV_CREDENTIAL_KEY]
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"x" * (lh.MAX_CREDENTIAL_BYTES + 1))
    with pytest.raises(ConfigError, match="not a credential"):
        lh.read_credentials(bucket, key, s3_client)
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"{}")
    with pytest.raises(ConfigError, match="not a Talos client credential"):
        lh.read_credentials(bucket, key, s3_client)


def test_node_down(runner_env, monkeypatch, s3_client, bucket):
    monkeypatch.setenv(lh.ENV_PORT, str(free_port()))
    with pytest.raises(NodeUnreachable):
        lh.handler({}, None)
    assert no_leftovers(s3_client, bucket) == ([], [])


def test_missing_settings_and_credential(aws_env, bucket, s3_client, monkeypatch):
    for k in (lh.ENV_BUCKET, lh.ENV_NODE, lh.ENV_CREDENTIAL_KEY, lh.ENV_CLUSTER):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ConfigError) as ei:
        lh.run()
    assert lh.ENV_BUCKET in ei.value.message and lh.ENV_CREDENTIAL_KEY in ei.value.message
    with pytest.raises(ConfigError) as ei:
        lh.read_credentials(bucket, "credentials/none.json", s3_client)
    assert "credentials/none.json" in ei.value.message and "s3:GetObject" in ei.value.hint


@pytest.fixture(scope="module")
def big_apid(os_ca, tmp_path_factory):
    """An apid over an etcd holding ~12 MB, so the upload goes multipart (8 MiB parts)."""
    e = start_etcd(tmp_path_factory.mktemp("big-etcd"))
    try:
        blob = os.urandom(1_000_000)  # under etcd's 1.5 MiB request limit; random so nothing compresses it away
        for i in range(12):
            sandbox_etcd.put(e.endpoint, f"/registry/blobs/b{i}", blob)
        with SimulatedApid(e.endpoint, *os_ca, keep_dir=tmp_path_factory.mktemp("big-served")) as a:
            yield a
    finally:
        e.proc.terminate()
        e.proc.wait(10)


@pytest.mark.slow
def test_multipart_upload_cut_midway_is_aborted(runner_env, big_apid, monkeypatch, s3_client, bucket):
    monkeypatch.setenv(lh.ENV_PORT, str(big_apid.port))
    res = lh.run()  # the whole thing first: multipart, verified
    assert res.size > s3.PART_SIZE and res.size == big_apid.last_snapshot.stat().st_size
    s3_client.delete_object(Bucket=bucket, Key=res.key)
    big_apid.fault, big_apid.fault_after = "cut", s3.PART_SIZE + (1 << 20)  # after the first part went up
    try:
        with pytest.raises(TruncatedSnapshot):
            lh.run()
    finally:
        big_apid.fault = None
    objs, uploads = no_leftovers(s3_client, bucket)
    assert objs == [] and uploads == []


def test_downloaded_object_verifies(runner_env, s3_client, bucket, tmp_path):
    res = lh.run()
    s3_client.download_file(bucket, res.key, str(tmp_path / "x.db.zst"))
    # the real zstd CLI reads what the Lambda wrote
    subprocess.run([require_binary("zstd"), "-q", "-d", str(tmp_path / "x.db.zst"), "-o", str(tmp_path / "x.db")],
                   check=True)
    assert verify_file(tmp_path / "x.db").content_sha256 == res.sha256


def test_encrypted_to_the_stacks_recipients_and_the_age_cli_reads_it(runner_env, s3_client, bucket, tmp_path, apid,
                                                                     monkeypatch):
    """With TALOS_DR_AGE_RECIPIENTS set the object is zstd then age (as talos-backup writes it), and only an identity
    opens it: `age -d -i key | zstd -d` gives back exactly the node's snapshot."""
    key_file = tmp_path / "key.txt"
    subprocess.run([require_binary("age-keygen"), "-o", str(key_file)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(key_file)], check=True, capture_output=True, text=True).stdout
    monkeypatch.setenv(lh.ENV_AGE_RECIPIENTS, public.strip())
    res = lh.run()
    assert res.key.endswith(".db.zst.age") and res.format == "zstd+age"
    raw = s3_client.get_object(Bucket=bucket, Key=res.key)["Body"].read()
    assert raw.startswith(b"age-encryption.org/v1\n")
    plain = subprocess.run(f"age -d -i {key_file} | zstd -q -d", shell=True, input=raw, capture_output=True,
                           check=True).stdout
    assert plain == apid.last_snapshot.read_bytes() and verify_file_bytes(plain) == res.sha256


def verify_file_bytes(data: bytes) -> str:
    from dr.core.integrity import verify_stream

    return verify_stream([data]).content_sha256


def test_an_sdk_too_old_for_conditional_writes_is_refused_before_anything_runs():
    import botocore

    assert lh.check_sdk() == botocore.__version__  # the pinned one
    assert lh.check_sdk("1.35.0") == "1.35.0"
    with pytest.raises(ConfigError, match=r"botocore 1\.34\.162 is too old") as ei:
        lh.check_sdk("1.34.162")
    assert "pulumi up" in ei.value.hint
