"""The EtcdSnapshotSchedule dynamic provider's methods, called directly against the simulated apid and moto."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime, timedelta

import dill
import pytest
from pulumi.dynamic.dynamic import serialize_provider

from dr import s3
from dr import schedule as sch
from dr.integrity import verify_file

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("expr,interval", [
    ("rate(1 hour)", timedelta(hours=1)),
    ("rate(30 minutes)", timedelta(minutes=30)),
    ("rate(2 days)", timedelta(days=2)),
    ("cron(0 * * * ? *)", timedelta(hours=1)),
    ("cron(15 */6 * * ? *)", timedelta(hours=6)),
    ("cron(0 3 * * ? *)", timedelta(days=1)),
])
def test_schedule_interval(expr, interval):
    assert sch.schedule_interval(expr) == interval


@pytest.mark.parametrize("expr", ["rate(0 hours)", "at(2026-01-01T00:00:00)", "every hour", "cron(0 * * *)"])
def test_schedule_interval_refuses(expr):
    with pytest.raises(ValueError):
        sch.schedule_interval(expr)


@pytest.mark.parametrize("newest,now,expected", [
    (T0, T0 + timedelta(minutes=59), "fresh"),
    (T0, T0 + timedelta(hours=1, minutes=59), "fresh"),
    (T0, T0 + timedelta(hours=2), "stale since 2026-05-01T14:00:00Z"),
    (T0, T0 + timedelta(days=3), "stale since 2026-05-01T14:00:00Z"),
    (None, T0, "stale: no snapshot in s3://b/snapshots/"),
])
def test_freshness_table(newest, now, expected):
    assert sch.freshness(newest, timedelta(hours=1), now, "s3://b/snapshots/").startswith(expected)


@pytest.fixture
def props(runner_env, apid):
    from dr import lambda_handler as lh

    return {"bucket": runner_env[lh.ENV_BUCKET], "prefix": "snapshots/", "region": "us-east-1", "cluster": "sandbox",
            "interval_seconds": 3600, "function_name": None, "node": apid.host, "port": apid.port,
            "secret_id": runner_env[lh.ENV_SECRET_ID], "backups": None, "newest_snapshot_key": None,
            "newest_snapshot_time": None, "stale_since": None, "proof_snapshot_key": None}


def test_create_proves_a_snapshot(props, s3_client, tmp_path, apid):
    p = sch.EtcdSnapshotScheduleProvider()
    res = p.create(props)
    outs = res.outs
    assert res.id == f"{props['bucket']}/snapshots/"
    assert outs["proof_snapshot_key"] == outs["newest_snapshot_key"]
    assert outs["backups"] == "fresh" and apid.calls[-1] == ("os:etcd:backup", "ok")
    taken = datetime.strptime(outs["newest_snapshot_time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert outs["stale_since"] == (taken + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    s3_client.download_file(props["bucket"], outs["proof_snapshot_key"], str(tmp_path / "p.db"))
    verify_file(tmp_path / "p.db")


def test_fresh_newest_snapshot_means_no_diff(props):
    p = sch.EtcdSnapshotScheduleProvider()
    outs = p.create(props).outs
    checked = p.check(outs, dict(props)).inputs
    assert checked["backups"] == "fresh"
    assert p.diff("id", outs, checked).changes is False


def _put_old_snapshot(props, apid, s3_client, when):
    key = f"snapshots/etcd-snapshot-{when:%Y%m%dT%H%M%SZ}.db"
    s3.upload_snapshot_file(s3_client, props["bucket"], key, apid.last_snapshot, taken_at=when, cluster="sandbox")
    return key


def test_stale_newest_snapshot_shows_in_preview_and_update_catches_up(props, apid, s3_client, monkeypatch):
    import pulumi

    warnings = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: warnings.append(msg))
    p = sch.EtcdSnapshotScheduleProvider()
    outs = p.create(props).outs  # gives apid.last_snapshot a real file to re-upload under an old name
    for obj in s3_client.list_objects_v2(Bucket=props["bucket"])["Contents"]:
        s3_client.delete_object(Bucket=props["bucket"], Key=obj["Key"])
    old = datetime.now(UTC) - timedelta(hours=5)
    old_key = _put_old_snapshot(props, apid, s3_client, old)

    checked = p.check(outs, dict(props)).inputs
    assert checked["backups"].startswith("stale since " + (old + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"))
    assert len(warnings) == 1 and "stale since" in warnings[0] and "catch-up" in warnings[0]
    assert p.diff("id", outs, checked).changes is True

    new = p.update("id", outs, checked).outs
    assert new["backups"] == "fresh" and new["newest_snapshot_key"] != old_key
    assert new["newest_snapshot_key"] == new["proof_snapshot_key"]
    assert p.diff("id", new, p.check(new, dict(props)).inputs).changes is False


def test_no_snapshot_at_all_is_stale(props):
    p = sch.EtcdSnapshotScheduleProvider()
    olds = {**props, "backups": "fresh"}
    checked = p.check(olds, dict(props)).inputs
    assert checked["backups"].startswith("stale: no snapshot in s3://")
    assert p.diff("id", olds, checked).changes is True


def test_config_change_is_a_change_and_unknowns_do_not_list(props):
    p = sch.EtcdSnapshotScheduleProvider()
    olds = {**props, "backups": "fresh"}
    assert p.diff("id", olds, {**props, "backups": "fresh", "interval_seconds": 7200}).changes is True
    from pulumi.runtime import rpc

    unknown = {**props, "bucket": rpc.UNKNOWN}
    assert p.check(olds, unknown).inputs["backups"] == "unknown"


def test_check_rejects_bad_inputs(props):
    p = sch.EtcdSnapshotScheduleProvider()
    res = p.check({}, {**props, "interval_seconds": 0, "node": None})
    assert {f.property for f in res.failures} == {"interval_seconds", "function_name"}


def test_delete_keeps_snapshots(props, s3_client):
    p = sch.EtcdSnapshotScheduleProvider()
    outs = p.create(props).outs
    p.delete("id", outs)
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=props["bucket"])["Contents"]]
    assert outs["proof_snapshot_key"] in keys


def test_read_refreshes_newest(props, apid, s3_client):
    p = sch.EtcdSnapshotScheduleProvider()
    outs = p.create(props).outs
    later = datetime.now(UTC) + timedelta(minutes=5)
    key = _put_old_snapshot(props, apid, s3_client, later)
    assert p.read("id", outs).outs["newest_snapshot_key"] == key


def test_provider_round_trips_through_dill_by_reference():
    p = sch.EtcdSnapshotScheduleProvider()
    blob = base64.b64decode(serialize_provider(p))  # exactly what pulumi stores in __provider
    assert b"dr.schedule" in blob and b"EtcdSnapshotScheduleProvider" in blob
    assert len(blob) < 1000  # pickled by reference: no code, no captured globals
    back = dill.loads(blob)
    assert type(back) is sch.EtcdSnapshotScheduleProvider


class _FakeLambda:
    def __init__(self, payload, error=None):
        self.payload, self.error, self.calls = payload, error, []

    def invoke(self, **kw):
        self.calls.append(kw)
        out = {"Payload": io.BytesIO(json.dumps(self.payload).encode())}
        if self.error:
            out["FunctionError"] = self.error
        return out


def test_lambda_mode_invokes_synchronously_and_reports_failures(monkeypatch):
    import boto3

    fake = _FakeLambda({"errorType": "NodeUnreachable", "errorMessage": "node does not answer"}, "Unhandled")
    monkeypatch.setattr(boto3, "client", lambda *a, **k: fake)
    with pytest.raises(RuntimeError) as ei:
        sch.trigger_snapshot({"function_name": "snap-fn", "region": "us-east-1"})
    assert "NodeUnreachable: node does not answer" in str(ei.value) and "/aws/lambda/snap-fn" in str(ei.value)
    assert fake.calls[0]["InvocationType"] == "RequestResponse" and fake.calls[0]["FunctionName"] == "snap-fn"
    fake2 = _FakeLambda({"key": "snapshots/etcd-snapshot-20260101T000000Z.db", "sha256": "ab"})
    monkeypatch.setattr(boto3, "client", lambda *a, **k: fake2)
    assert sch.trigger_snapshot({"function_name": "snap-fn"})["key"].endswith(".db")
