"""A bucket with 10,000 snapshot objects: listings page (1,000 keys a page), ``latest`` finds the newest on the last
page, and foreign keys are ignored.

moto's server answers about 150 PUTs a second on this machine, so the 10,000 objects go straight into the backend of
an in-process moto server; every read the DR commands make still goes over HTTP through the S3 protocol."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime, timedelta

import pytest

from dr.adapters import s3
from dr.commands import verify
from dr.core import naming
from tests.faults.conftest import S3_ENV, grow, put_single_part
from tests.support.tools import free_port, run_cli

pytestmark = pytest.mark.slow  # lists a 10,000-object bucket (~4 s each)

COUNT = 10_000
BASE = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def big_bucket(tmp_path_factory):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        with pytest.MonkeyPatch.context() as mp:
            for k, v in S3_ENV.items():
                mp.setenv(k, v)
            client = s3.make_client("us-east-1", endpoint_url=endpoint)
        bucket = "big-bucket-10k"
        client.create_bucket(Bucket=bucket)
        backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
        for i in range(COUNT - 1):
            key = "snapshots/" + naming.snapshot_name(BASE + timedelta(minutes=10 * i))
            backend.put_object(bucket, key, b"old snapshot stand-in")
        backend.put_object(bucket, "snapshots/README.txt", b"not a snapshot")
        backend.put_object(bucket, "snapshots/etcd-snapshot-99991231T235959Z.db.part", b"not a snapshot either")
        yield endpoint, bucket, client
    finally:
        server.stop()


@pytest.fixture
def big_env(big_bucket, monkeypatch, tmp_path):
    endpoint, bucket, client = big_bucket
    for k, v in {**S3_ENV, "AWS_ENDPOINT_URL_S3": endpoint, "DR_BUCKET": bucket}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    return endpoint, bucket, client


def test_latest_is_the_newest_on_the_last_page(big_env, sandbox_factory, tmp_path):
    _, bucket, client = big_env
    sb = sandbox_factory(with_s3=False)
    grow(sb, 1)
    snap = tmp_path / "real.db"
    sb.etcdctl("snapshot", "save", str(snap))
    newest = "snapshots/" + naming.snapshot_name(datetime.now(UTC))
    put_single_part(client, bucket, newest, snap)
    try:
        res = run_cli(verify.main, "latest", "--tmp-dir", str(tmp_path / "v"), "--bucket", bucket)
        assert res.code == 0, res
        assert newest in res.out + res.err
    finally:
        client.delete_object(Bucket=bucket, Key=newest)


@pytest.mark.skipif(importlib.util.find_spec("dr.list") is None, reason="dr.list has not landed yet")
def test_dr_list_shows_all(big_env):
    from dr.commands import list as dr_list

    _, bucket, _ = big_env
    res = run_cli(dr_list.main, "--bucket", bucket)
    assert res.code == 0, res
    assert str(COUNT - 1) in res.out.replace(",", "")
    assert "README.txt" not in res.out and ".part" not in res.out  # foreign keys are not snapshots
