"""The EtcdSnapshotSchedule dynamic provider's methods, called directly against the simulated apid and moto."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime, timedelta

import dill
import pytest
from pulumi.dynamic.dynamic import serialize_provider

from dr.adapters.store import S3Store, fetch
from dr.core import freshness
from dr.core.integrity import iter_file, verify_file
from infra.providers import backup_check as sch
from tests.support.talos_api import CREDENTIAL_KEY

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
    assert freshness.schedule_interval(expr) == interval


@pytest.mark.parametrize("expr", ["rate(0 hours)", "at(2026-01-01T00:00:00)", "every hour", "cron(0 * * *)"])
def test_schedule_interval_refuses(expr):
    with pytest.raises(ValueError):
        freshness.schedule_interval(expr)


@pytest.mark.parametrize("newest,now,expected", [
    (T0, T0 + timedelta(minutes=59), "fresh"),
    (T0, T0 + timedelta(hours=1, minutes=59), "fresh"),
    (T0, T0 + timedelta(hours=2), "stale since 2026-05-01T14:00:00Z"),
    (T0, T0 + timedelta(days=3), "stale since 2026-05-01T14:00:00Z"),
    (None, T0, "stale: no snapshot in s3://b/snapshots/"),
])
def test_freshness_table(newest, now, expected):
    assert freshness.freshness(newest, timedelta(hours=1), now, "s3://b/snapshots/").startswith(expected)


@pytest.fixture
def props(runner_env, apid):
    from snapshot_lambda import handler as lh

    return {"bucket": runner_env[lh.ENV_BUCKET], "prefix": "snapshots/", "region": "us-east-1", "cluster": "sandbox",
            "interval_seconds": 3600, "function_name": None, "node": apid.host, "port": apid.port,
            "credential_key": runner_env[lh.ENV_CREDENTIAL_KEY], "backups": None, "newest_snapshot_key": None,
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
    # the proof is stored as the Lambda stores every snapshot (zstd): it decodes to a whole snapshot
    store = S3Store(s3_client, props["bucket"], "snapshots/")
    fetch(store, store.stat(outs["proof_snapshot_key"]), tmp_path / "p.db")
    verify_file(tmp_path / "p.db")


def test_fresh_newest_snapshot_means_no_diff(props):
    p = sch.EtcdSnapshotScheduleProvider()
    outs = p.create(props).outs
    checked = p.check(outs, dict(props)).inputs
    assert checked["backups"] == "fresh"
    assert p.diff("id", outs, checked).changes is False


def _put_old_snapshot(props, apid, s3_client, when):
    with open(apid.last_snapshot, "rb") as f:
        entry = S3Store(s3_client, props["bucket"], "snapshots/").put(
            iter_file(f), f"etcd-snapshot-{when:%Y%m%dT%H%M%SZ}.db", compress=True)
    assert entry.key is not None
    return entry.key


def test_stale_newest_snapshot_shows_in_preview_and_update_catches_up(props, apid, s3_client, monkeypatch):
    import pulumi

    warnings = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: warnings.append(msg))
    p = sch.EtcdSnapshotScheduleProvider()
    outs = p.create(props).outs  # gives apid.last_snapshot a real file to re-upload under an old name
    for obj in s3_client.list_objects_v2(Bucket=props["bucket"])["Contents"]:
        if obj["Key"] != CREDENTIAL_KEY:  # the Lambda's credential stays
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
    assert b"infra.providers.backup_check" in blob and b"EtcdSnapshotScheduleProvider" in blob
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
    # The function logs to its own group (infra/schedule.py logging_config), which the message must name.
    assert "NodeUnreachable: node does not answer" in str(ei.value)
    assert "/talos-dr/<clusterName>/snapshots" in str(ei.value) and "/aws/lambda/" not in str(ei.value)
    assert isinstance(ei.value, sch.SnapshotTriggerError) and ei.value.error_type == "NodeUnreachable"
    with pytest.raises(RuntimeError, match="log group /talos-dr/prod-cluster/snapshots"):
        sch.trigger_snapshot({"function_name": "snap-fn", "cluster": "prod-cluster"})
    with pytest.raises(RuntimeError, match="log group /talos-dr/x/snapshots-from-stack"):
        sch.trigger_snapshot({"function_name": "snap-fn", "cluster": "x", "log_group": "/talos-dr/x/snapshots-from-stack"})
    assert fake.calls[0]["InvocationType"] == "RequestResponse" and fake.calls[0]["FunctionName"] == "snap-fn"
    fake2 = _FakeLambda({"key": "snapshots/etcd-snapshot-20260101T000000Z.db", "sha256": "ab"})
    monkeypatch.setattr(boto3, "client", lambda *a, **k: fake2)
    assert sch.trigger_snapshot({"function_name": "snap-fn"})["key"].endswith(".db")


# --- the proving snapshot retries while etcd starts ---------------------------------------------------------------

NODE_DOWN = ("NodeUnreachable", "etcd snapshot from 10.0.1.10 failed: the node does not answer (UNAVAILABLE: "
             "[Errno 111] Connection refused)")
# machined's own wording while etcd is not serving (v1alpha1_server.go EtcdSnapshot)
ETCD_STARTING = ("NodeError", "etcd snapshot from 10.0.1.10 failed: UNKNOWN: failed to create etcd client: "
                 "dial tcp 127.0.0.1:2379: connect: connection refused")
ETCD_DEADLINE = ("NodeError", "etcd snapshot from 10.0.1.10 failed: UNKNOWN: failed reading etcd snapshot: "
                 "context deadline exceeded")


@pytest.mark.parametrize("error_type,detail,transient", [
    (*NODE_DOWN, True),
    (*ETCD_STARTING, True),
    (*ETCD_DEADLINE, True),
    ("Timeout", "etcd snapshot from 10.0.1.10 did not finish in time (DEADLINE_EXCEEDED)", True),
    ("Sandbox.Timedout", "2026-01-01T00:00:00Z abc Task timed out after 300.00 seconds", True),
    ("TooManyRequestsException", "Rate exceeded", True),
    ("NodeUnreachable", "TLS handshake with 10.0.1.10 failed during etcd snapshot: certificate verify failed", False),
    ("NodeError", "etcd snapshot from 10.0.1.10 refused: PERMISSION_DENIED: not authorized", False),
    ("ConfigError", "the snapshot runner is missing TALOS_DR_BUCKET", False),
    ("AccessDenied", "S3 denied PutObject on s3://b/snapshots/x", False),
    ("CorruptSnapshot", "sha256 mismatch", False),
])
def test_transient_reason_table(error_type, detail, transient):
    assert (sch.transient_reason(error_type, detail) is not None) is transient


class FakeTrigger:
    """Fails with the given (error_type, detail) pairs, in order, then returns a result."""

    def __init__(self, *failures, lambda_mode=True):
        self.failures, self.calls, self.lambda_mode = list(failures), 0, lambda_mode

    def __call__(self, props):
        self.calls += 1
        if self.failures:
            error_type, detail = self.failures.pop(0)
            if self.lambda_mode:
                raise sch.SnapshotTriggerError(f"the snapshot Lambda fn failed: {error_type}: {detail}",
                                               error_type, detail)
            from dr.core import errors

            raise getattr(errors, error_type)(detail)
        return {"key": "snapshots/etcd-snapshot-20260101T000000Z.db", "sha256": "ab"}


class FakeClock:
    def __init__(self):
        self.now, self.slept = 0.0, []

    def sleep(self, s):
        self.slept.append(s)
        self.now += s


@pytest.mark.parametrize("lambda_mode", [True, False])
def test_retries_transient_failures_with_backoff(lambda_mode, monkeypatch):
    import pulumi

    warnings = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: warnings.append(msg))
    clock, fake = FakeClock(), FakeTrigger(NODE_DOWN, ETCD_STARTING, ETCD_DEADLINE, lambda_mode=lambda_mode)
    out = sch.trigger_with_retry({}, fake, clock=lambda: clock.now, sleep=clock.sleep)
    assert out["key"].endswith(".db") and fake.calls == 4
    assert clock.slept == [5, 10, 20], "backoff doubles from 5 s"
    assert len(warnings) == 3 and "etcd is not serving yet" in warnings[1] and "retrying in 10 s" in warnings[1]


def test_gives_up_after_the_budget_with_one_line(monkeypatch):
    import pulumi

    monkeypatch.setattr(pulumi.log, "warn", lambda *a, **k: None)
    clock, fake = FakeClock(), FakeTrigger(*[ETCD_STARTING] * 100)
    with pytest.raises(RuntimeError) as info:
        sch.trigger_with_retry({}, fake, budget_seconds=600, clock=lambda: clock.now, sleep=clock.sleep)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("the proving etcd snapshot still failed after")
    assert "(etcd is not serving yet)" in msg and "failed to create etcd client" in msg and "pulumi up" in msg
    assert clock.slept == [5, 10, 20, 40, 60, 60, 60, 60, 60, 60, 60, 60] and sum(clock.slept) <= 600
    assert f"after {fake.calls} attempts" in msg and fake.calls == 13


def test_a_permanent_failure_is_not_retried():
    clock, fake = FakeClock(), FakeTrigger(("AccessDenied", "S3 denied PutObject"))
    with pytest.raises(sch.SnapshotTriggerError, match="S3 denied"):
        sch.trigger_with_retry({}, fake, clock=lambda: clock.now, sleep=clock.sleep)
    assert fake.calls == 1 and clock.slept == []


@pytest.mark.slow
def test_create_proves_a_snapshot_after_the_node_answered_late(props, apid, monkeypatch):
    """The whole create: the trigger fails twice as a starting node does, then the real runner takes the snapshot."""
    real = sch.trigger_snapshot
    fake = FakeTrigger(NODE_DOWN, ETCD_STARTING, lambda_mode=False)

    def flaky(p):
        return fake(p) if fake.failures else real(p)

    monkeypatch.setattr(sch, "trigger_snapshot", flaky)
    monkeypatch.setattr(sch.time, "sleep", lambda s: None)
    outs = sch.EtcdSnapshotScheduleProvider().create(props).outs
    assert outs["backups"] == "fresh" and outs["proof_snapshot_key"] == outs["newest_snapshot_key"]
    assert fake.calls == 2 and apid.calls[-1] == ("os:etcd:backup", "ok")


def test_clients_use_the_stacks_aws_profile_not_the_environment(tmp_path, monkeypatch):
    """A stack authenticating with `aws:profile` must not have its deploy-time
    checks talk to whatever account the shell's credentials name."""
    from dr.adapters import s3

    creds = tmp_path / "credentials"
    creds.write_text("[stackprof]\naws_access_key_id = AKIASTACKPROFILE\naws_secret_access_key = x\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    client = s3.make_client("us-east-1", profile="stackprof")
    assert client._request_signer._credentials.access_key == "AKIASTACKPROFILE"
    assert s3.make_client("us-east-1")._request_signer._credentials.access_key != "AKIASTACKPROFILE"


def test_the_stacks_aws_profile_reaches_the_provider():
    from tests.infra.mocks import run_program, stack_file_config

    run = run_program({**stack_file_config(), "aws:profile": "stackprof"})
    (watch,) = run.dynamic("schedule")
    assert watch.inputs["profile"] == "stackprof"
    (plain,) = run_program(stack_file_config()).dynamic("schedule")
    assert not plain.inputs.get("profile")
