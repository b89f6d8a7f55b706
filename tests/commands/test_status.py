"""`talos-dr status` on the sandbox: OK after a scheduled backup (the real Lambda handler against the simulated node,
its EMF line turned into CloudWatch metrics in moto as CloudWatch Logs would), WARN when the clock moves past two
intervals, a line of its own for what it could not check when the node is down, FAIL with an etcd NOSPACE alarm that
etcd raised itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from dr import main as talos_dr
from dr.commands import status, verify
from dr.core.errors import ExitCode, NodeUnreachable
from infra.alarms import alarm_specs, failed_runs_spec
from snapshot_lambda import handler as lh
from tests.support import emf
from tests.support.scheduled import lambda_env
from tests.support.tools import run_cli

pytestmark = pytest.mark.slow
QUOTA = 4 * 1024 * 1024


@pytest.fixture
def stack(sandbox_factory, monkeypatch, tmp_path, capsys):
    """A sandbox with a 4 MiB etcd quota, the Lambda's environment, and the stack's alarms created in moto's
    CloudWatch as infra/alarms.py defines them (Pulumi names each <resource>-<random>)."""
    import boto3

    sb = sandbox_factory(etcd_quota_bytes=QUOTA)
    for k, v in {**sb.env, **lambda_env(sb, quota=QUOTA)}.items():
        monkeypatch.setenv(k, v)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cw = boto3.client("cloudwatch", region_name=sb.region)
    cluster = sb.cluster_name
    for spec in [*alarm_specs(cluster, 3600), failed_runs_spec(cluster)]:
        cw.put_metric_alarm(AlarmName=f"{cluster}-{spec.key}-a1b2c3d", Namespace=spec.namespace,
                            MetricName=spec.metric, Dimensions=[{"Name": spec.dimension, "Value": cluster}],
                            Statistic=spec.statistic, ComparisonOperator=spec.comparison, Threshold=spec.threshold,
                            Period=spec.period, EvaluationPeriods=spec.evaluation_periods,
                            TreatMissingData=spec.treat_missing_data, AlarmDescription=spec.description)
        cw.set_alarm_state(AlarmName=f"{cluster}-{spec.key}-a1b2c3d", StateValue="OK", StateReason="test")
    return sb, cw


def scheduled_run(cw, capsys) -> dict:
    """One scheduled run: the real handler; its EMF line extracted into CloudWatch metrics."""
    capsys.readouterr()
    result = lh.handler({"trigger": "schedule"}, None)
    (line,) = emf.emf_lines(capsys.readouterr().out)
    assert emf.publish(line, cw) > 0
    return result


def by_name(res) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(res.out)["checks"]}


def test_status_ok_after_a_backup_then_warn_fail_and_unchecked(stack, capsys):
    sb, cw = stack
    scheduled_run(cw, capsys)
    assert run_cli(verify.main, "latest", "--tmp-dir", str(sb.dir / "v")).code == 0  # marks it verified

    res = run_cli(status.main)
    assert res.code == ExitCode.OK == 0, res.out + res.err
    lines = res.out.splitlines()
    assert lines[0].startswith(f"talos-dr status of {sb.cluster_name} at ") and "losing the node now loses" in lines[0]
    assert all(line.startswith(("OK ", "  ")) for line in lines[1:]), res.out
    doc = by_name(run_cli(status.main, "--json"))
    assert doc["etcd on the node"]["state"] == "OK" and "quota" in doc["etcd on the node"]["summary"]
    assert doc["last scheduled run"]["state"] == "OK" and doc["backup alarms"]["summary"] == "5 defined, none firing"
    assert doc["bucket versioning"]["state"] == "OK" and doc["lifecycle tiers"]["state"] == "OK"

    # Move the clock, not the files: 2.5 intervals later the newest snapshot is stale.
    later = datetime.now(UTC) + timedelta(hours=2, minutes=30)
    res = run_cli(status.main, "--json", now=lambda: later)
    checks = by_name(res)
    assert res.code == ExitCode.STATUS_WARN == 26, res.out
    assert checks["newest snapshot in S3"]["state"] == "WARN"
    assert "talos-dr backup --save-to-s3" in checks["newest snapshot in S3"]["fix"]
    assert json.loads(res.out)["worst"] == "WARN" and json.loads(res.out)["rpo_seconds"] > 2 * 3600

    # The node down: what could not be checked is a line of its own.
    sb.set_faults(unreachable=True)
    res = run_cli(status.main)
    assert res.code == ExitCode.STATUS_WARN, res.out
    (etcd_line,) = [ln for ln in res.out.splitlines() if "etcd on the node" in ln]
    assert etcd_line.startswith("UNCHECKED") and "could not check: the node did not answer" in etcd_line
    # ... and the scheduled run that hits it fails, reports it, and status says so with the command to look
    with pytest.raises(NodeUnreachable):
        scheduled_run(cw, capsys)
    (line,) = emf.emf_lines(capsys.readouterr().out)
    emf.publish(line, cw)
    res = run_cli(status.main, "--json")
    checks = by_name(res)
    assert res.code == ExitCode.STATUS_FAIL, res.out
    assert checks["last scheduled run"]["state"] == "FAIL" and "aws logs tail" in checks["last scheduled run"]["fix"]
    assert checks["etcd on the node"]["state"] == "UNCHECKED"
    sb.clear_faults()

    # etcd fills its quota and raises NOSPACE itself: FAIL, with the commands that fix it.
    sb.raise_nospace_alarm()
    res = run_cli(status.main, "--json")
    checks = by_name(res)
    assert res.code == ExitCode.STATUS_FAIL == 27, res.out
    assert checks["etcd on the node"]["state"] == "FAIL" and "NOSPACE" in checks["etcd on the node"]["summary"]
    assert "talosctl etcd alarm disarm" in checks["etcd on the node"]["fix"]


def test_without_cloudwatch_or_bucket_it_says_what_it_could_not_check(sandbox_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    res = run_cli(status.main, "--json")
    doc = json.loads(res.out)
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["last scheduled run"]["state"] == "UNCHECKED"
    assert "CloudWatch not readable" in checks["last scheduled run"]["summary"]
    assert checks["newest snapshot in S3"]["state"] == "FAIL"  # the sandbox bucket is empty
    assert res.code == doc["exit_code"] == ExitCode.STATUS_FAIL


def test_status_is_a_talos_dr_command_with_its_exit_codes_listed():
    res = run_cli(talos_dr.main, "exit-codes")
    assert " 26  STATUS_WARN" in res.out and " 27  STATUS_FAIL" in res.out
    assert "status" in talos_dr.COMMANDS
    with pytest.raises(SystemExit) as ei:
        run_cli(talos_dr.main, "status", "-h")
    assert ei.value.code == 0
