"""infra/alarms.py under Pulumi's mocks, wired into the whole program: the topic, its email subscriptions, the
alertTopicArn output, and every alarm's metric, statistic, threshold, period and missing-data rule."""

from __future__ import annotations

import pytest

from dr.core import metrics
from dr.core import outputs as out
from infra.alarms import alarm_specs, staleness_window
from infra.config import ConfigValidationError, validate_config
from tests.infra.mocks import ACCOUNT_ID, run_program, stack_file_config

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
EMAILS = '["ops@example.com","oncall@example.org"]'


@pytest.fixture(scope="module")
def prod():
    return run_program({**stack_file_config(), "talos-dr:alertEmails": EMAILS})


def alarms(run) -> dict[str, dict]:
    return {r.name.removeprefix("talos-dr-"): r.inputs for r in run.of_type(ALARM)}


def test_topic_subscriptions_and_output(prod):
    topic = prod.one("aws:sns/topic:Topic")
    topic_arn = f"arn:aws:sns:us-east-1:{ACCOUNT_ID}:{topic.name}"
    subs = prod.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert sorted((s.inputs["protocol"], s.inputs["endpoint"]) for s in subs) == [
        ("email", "oncall@example.org"), ("email", "ops@example.com")]
    assert all(s.inputs["topic"] == topic_arn for s in subs)
    assert prod.outputs[out.ALERT_TOPIC_ARN] == topic_arn and not prod.secret[out.ALERT_TOPIC_ARN]
    assert prod.options(topic.name)["parent"].endswith("talos-dr:alarms:BackupAlarms::talos-dr")
    for a in alarms(prod).values():  # every alarm notifies the topic, when it fires and when it clears
        assert a["alarmActions"] == [topic_arn] and a["okActions"] == [topic_arn]
        assert "`talos-dr status`" in a["alarmDescription"] and len(a["alarmDescription"]) <= 1024


def test_no_snapshot_for_two_intervals_and_silence_counts(prod):
    a = alarms(prod)["no-snapshot"]
    assert (a["namespace"], a["metricName"], a["dimensions"]) == ("TalosDR", "SnapshotSuccess", {"Cluster": "talos-dr"})
    assert a["statistic"] == "Sum" and a["comparisonOperator"] == "LessThanThreshold" and a["threshold"] == 1
    assert a["period"] == 3600 and a["evaluationPeriods"] == 2 and a["datapointsToAlarm"] == 2  # rate(1 hour)
    assert a["treatMissingData"] == "breaching"  # a schedule that stopped firing alarms too
    assert "talos-dr backup --save-to-s3" in a["alarmDescription"]


def test_credential_under_30_days(prod):
    a = alarms(prod)["credential-expiry"]
    assert (a["metricName"], a["statistic"], a["comparisonOperator"], a["threshold"]) == (
        "CredentialDaysLeft", "Minimum", "LessThanThreshold", 30)
    assert a["period"] == 3600 and a["evaluationPeriods"] == 1 and a["treatMissingData"] == "missing"
    assert "`pulumi up`" in a["alarmDescription"]


def test_etcd_alarm_and_quota(prod):
    a = alarms(prod)["etcd-alarm"]
    assert (a["metricName"], a["statistic"], a["comparisonOperator"], a["threshold"]) == (
        "EtcdActiveAlarms", "Maximum", "GreaterThanThreshold", 0)
    assert a["dimensions"] == {"Cluster": "talos-dr"} and a["treatMissingData"] == "missing"
    assert "talosctl etcd alarm disarm" in a["alarmDescription"]
    q = alarms(prod)["etcd-quota"]
    assert (q["metricName"], q["statistic"], q["comparisonOperator"], q["threshold"]) == (
        "EtcdDbQuotaPercent", "Maximum", "GreaterThanThreshold", 80)
    assert q["period"] == 3600 and "talosctl etcd defrag" in q["alarmDescription"]


def test_a_run_that_failed_every_retry_alarms(prod):
    queue = prod.one("aws:sqs/queue:Queue")
    a = alarms(prod)["failed-runs"]
    assert (a["namespace"], a["metricName"], a["statistic"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible",
                                                                 "Maximum")
    assert a["dimensions"] == {"QueueName": queue.name} and a["comparisonOperator"] == "GreaterThanThreshold"
    assert a["threshold"] == 0 and a["period"] == 300 and a["treatMissingData"] == "notBreaching"
    invoke = prod.one("aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig")
    assert invoke.inputs["destinationConfig"]["onFailure"]["destination"].endswith(f":{queue.name}")


def test_the_metrics_alarmed_on_are_the_ones_the_lambda_writes(prod):
    names = {a["metricName"] for a in alarms(prod).values() if a["namespace"] == metrics.NAMESPACE}
    assert names <= set(metrics.BY_NAME)
    assert set(alarms(prod)) == {"no-snapshot", "credential-expiry", "etcd-alarm", "etcd-quota", "failed-runs"}


def test_schedule_off_means_no_alarms():
    run = run_program({**stack_file_config(), "talos-dr:scheduledSnapshots": "false"})
    assert not run.of_type(ALARM) and not run.of_type("aws:sns/topic:Topic")
    assert out.ALERT_TOPIC_ARN not in run.outputs


@pytest.mark.parametrize("interval, window", [(3600, (3600, 2)), (1800, (1800, 2)), (86400, (86400, 2)),
                                              (6 * 3600, (6 * 3600, 2))])
def test_the_staleness_window_follows_the_schedule(interval, window):
    assert staleness_window(interval) == window
    assert {s.period for s in alarm_specs("c", interval)} == {interval}


def test_a_schedule_cloudwatch_cannot_watch_is_refused():
    with pytest.raises(ValueError, match="cannot be watched"):
        staleness_window(4 * 86400)  # 2 x 4 days > CloudWatch's 7-day evaluation range


@pytest.mark.parametrize("value, error", [
    ('["not-an-address"]', "item 0 'not-an-address' is not an email address"),
    ('["a@example.com","A@example.com"]', "lists the same address twice"),
    ('"ops@example.com"', "alertEmails"),
])
def test_alert_emails_are_validated(value, error):
    from tests.infra.mocks import stack_file_config as cfg

    raw = {k.removeprefix("talos-dr:"): v for k, v in cfg().items()} | {"alertEmails": value}
    with pytest.raises(ConfigValidationError, match=error):
        validate_config(raw)
    ok = validate_config(raw | {"alertEmails": '["ops@example.com"]'})
    assert ok.alert_emails == ("ops@example.com",)
