"""Alarms on the scheduled backups, on by default: someone is told when snapshots stop, when the backup credential is
about to end, and when etcd is near its quota or has raised an alarm.

Resources (children of ``BackupAlarms``):

* an SNS topic (output ``alertTopicArn``: anything else, a chat hook or a pager, can subscribe to it), with one email
  subscription per ``alertEmails`` address. AWS first sends each address a confirmation mail; nothing is delivered to
  an address until someone clicks its link (https://docs.aws.amazon.com/sns/latest/dg/sns-email-notifications.html).
  The topic is not encrypted with the AWS-managed SNS key: CloudWatch alarms cannot publish to a topic encrypted with
  it (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html), and what is sent
  is an alarm's name and state, not data;
* CloudWatch metric alarms on the metrics the snapshot Lambda writes as Embedded Metric Format log lines
  (``dr.core.metrics``; namespace ``TalosDR``, dimension ``Cluster``), and on its failed-runs queue. Each notifies the
  topic when it fires and when it clears, and its description says what to do.

Every threshold and period is a pure function of the schedule (``alarm_specs``), tested under Pulumi's mocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from dr.core import metrics
from dr.core.etcd_health import QUOTA_WARN_PERCENT

# CloudWatch's limit on an alarm's evaluation range: Period x EvaluationPeriods at most 7 days, and at most 1 day for
# periods under an hour (PutMetricAlarm, Period; CloudWatch API reference).
MAX_EVALUATION_SECONDS = 7 * 86400
MAX_EVALUATION_SECONDS_SHORT = 86400
CREDENTIAL_ALARM_DAYS = 30  # the certificate has less than this left: a `pulumi up` mints a new one
# SQS publishes its queue metrics every 5 minutes (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/
# SQSDeveloperGuide/sqs-available-cloudwatch-metrics.html).
QUEUE_PERIOD = 300


@dataclass(frozen=True)
class AlarmSpec:
    """One CloudWatch alarm, as data (the component turns each into an ``aws.cloudwatch.MetricAlarm``)."""

    key: str  # the child resource's suffix, and how tests and `talos-dr status` name it
    metric: str
    namespace: str
    statistic: str
    comparison: str
    threshold: float
    period: int
    evaluation_periods: int
    treat_missing_data: str
    description: str
    dimension: str = metrics.DIMENSION  # the metric's one dimension name; its value is given to the component


def staleness_window(interval_seconds: int, intervals: int = 2) -> tuple[int, int]:
    """(period, evaluation periods) for "no successful snapshot for ``intervals`` schedule intervals": one period per
    interval. Raises ``ValueError`` when CloudWatch cannot evaluate that long a range."""
    period = interval_seconds
    limit = MAX_EVALUATION_SECONDS_SHORT if period < 3600 else MAX_EVALUATION_SECONDS
    if period % 60 or period * intervals > limit:
        raise ValueError(f"a schedule every {interval_seconds} s cannot be watched by a CloudWatch alarm over "
                         f"{intervals} intervals (at most {limit} s, in whole minutes); use a shorter snapshotSchedule")
    return period, intervals


def alarm_specs(cluster: str, interval_seconds: int, log_group: str = "", namespace: str = metrics.NAMESPACE,
                ) -> list[AlarmSpec]:
    """The alarms for a cluster whose snapshots run every ``interval_seconds``."""
    period, periods = staleness_window(interval_seconds)
    logs = f" (its log: {log_group})" if log_group else ""
    return [
        AlarmSpec(
            key="no-snapshot",
            metric=metrics.SNAPSHOT_SUCCESS.name,
            namespace=namespace,
            statistic="Sum",
            comparison="LessThanThreshold",
            threshold=1,
            period=period,
            evaluation_periods=periods,
            # No data means the Lambda did not run at all (schedule disabled or deleted, function broken before its
            # first line): that is exactly what this alarm is for.
            treat_missing_data="breaching",
            description=(f"No successful etcd snapshot of {cluster} for two schedule intervals: the scheduled "
                         f"Lambda failed or stopped running{logs}. Run `talos-dr status` to see why and what would "
                         "be lost, then `talos-dr backup --save-to-s3` to take one now; `pulumi up` repairs a "
                         "schedule or function that was changed by hand."),
        ),
        AlarmSpec(
            key="credential-expiry",
            metric=metrics.CREDENTIAL_DAYS_LEFT.name,
            namespace=namespace,
            statistic="Minimum",
            comparison="LessThanThreshold",
            threshold=CREDENTIAL_ALARM_DAYS,
            period=period,
            evaluation_periods=1,
            # A run that reports nothing keeps the alarm as it was; runs that stop are the no-snapshot alarm's.
            treat_missing_data="missing",
            description=(f"The os:etcd:backup certificate the scheduled snapshots of {cluster} use ends in under "
                         f"{CREDENTIAL_ALARM_DAYS} days; after that every run fails. Run `pulumi up` (it mints a new "
                         "one for the current 180-day period), then `talos-dr status`."),
        ),
        AlarmSpec(
            key="etcd-alarm",
            metric=metrics.ETCD_ALARMS.name,
            namespace=namespace,
            statistic="Maximum",
            comparison="GreaterThanThreshold",
            threshold=0,
            period=period,
            evaluation_periods=1,
            treat_missing_data="missing",
            description=(f"etcd on {cluster} has an active alarm (NOSPACE: the database reached its quota and "
                         "takes no writes; CORRUPT: members disagree). Run `talos-dr status`, then on the node "
                         "`talosctl etcd alarm list`; for NOSPACE free space (`talosctl etcd defrag`), then "
                         "`talosctl etcd alarm disarm`. See docs/MONITORING.md."),
        ),
        AlarmSpec(
            key="etcd-quota",
            metric=metrics.ETCD_DB_PERCENT.name,
            namespace=namespace,
            statistic="Maximum",
            comparison="GreaterThanThreshold",
            threshold=QUOTA_WARN_PERCENT,
            period=period,
            evaluation_periods=1,
            treat_missing_data="missing",
            description=(f"etcd's database on {cluster} is above {QUOTA_WARN_PERCENT:.0f}% of its quota; at 100% "
                         "etcd raises NOSPACE and Kubernetes can no longer write. Run `talos-dr status`, then "
                         "`talosctl etcd defrag` on the node (and remove what fills it). See docs/MONITORING.md."),
        ),
    ]


def failed_runs_spec(cluster: str) -> AlarmSpec:
    """The alarm on the failed-runs queue: a run whose every attempt failed (the Lambda's on-failure destination)."""
    return AlarmSpec(
        key="failed-runs",
        metric="ApproximateNumberOfMessagesVisible",
        namespace="AWS/SQS",
        statistic="Maximum",
        comparison="GreaterThanThreshold",
        threshold=0,
        period=QUEUE_PERIOD,
        evaluation_periods=1,
        treat_missing_data="notBreaching",  # SQS stops reporting a queue that stays empty for hours
        description=(f"A scheduled etcd snapshot of {cluster} failed on every retry. The message in the failed-runs "
                     "queue holds the error; run `talos-dr status`, fix the cause, take one now with "
                     "`talos-dr backup --save-to-s3`, then purge the queue (`aws sqs purge-queue`)."),
        dimension="QueueName",
    )


@dataclass
class BackupAlarmsArgs:
    cluster_name: str
    interval_seconds: int  # the snapshot schedule's interval (dr.core.freshness.schedule_interval)
    failed_runs_queue_name: pulumi.Input[str]  # the Lambda's on-failure destination (infra/schedule.py)
    alert_emails: Sequence[str] = ()  # config alertEmails
    log_group: str = ""  # named in the no-snapshot alarm's description
    namespace: str = metrics.NAMESPACE
    tags: Mapping[str, str] = field(default_factory=dict)


class BackupAlarms(pulumi.ComponentResource):
    topic_arn: pulumi.Output[str]
    alarm_names: pulumi.Output[list[str]]

    def __init__(self, name: str, args: BackupAlarmsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("talos-dr:alarms:BackupAlarms", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        specs = alarm_specs(args.cluster_name, args.interval_seconds, args.log_group, args.namespace)  # validates first
        tags = dict(args.tags)

        topic = aws.sns.Topic(f"{name}-alerts", display_name=f"talos-dr {args.cluster_name}"[:100], tags=tags,
                              opts=child)
        for i, email in enumerate(args.alert_emails):
            # Pending until the address confirms (AWS mails it a link first); Pulumi records it as created.
            aws.sns.TopicSubscription(f"{name}-alerts-email-{i}", topic=topic.arn, protocol="email", endpoint=email,
                                      opts=child)

        alarms = []
        for spec in [*specs, failed_runs_spec(args.cluster_name)]:
            value = args.failed_runs_queue_name if spec.dimension == "QueueName" else args.cluster_name
            alarms.append(aws.cloudwatch.MetricAlarm(
                f"{name}-{spec.key}",
                namespace=spec.namespace,
                metric_name=spec.metric,
                dimensions={spec.dimension: value},
                statistic=spec.statistic,
                comparison_operator=spec.comparison,
                threshold=spec.threshold,
                period=spec.period,
                evaluation_periods=spec.evaluation_periods,
                datapoints_to_alarm=spec.evaluation_periods,
                treat_missing_data=spec.treat_missing_data,
                alarm_description=spec.description,
                alarm_actions=[topic.arn],
                ok_actions=[topic.arn],
                tags=tags,
                opts=child,
            ))

        self.topic_arn = topic.arn
        self.alarm_names = pulumi.Output.all(*[a.name for a in alarms])
        self.register_outputs({"topic_arn": self.topic_arn, "alarm_names": self.alarm_names})


__all__ = ["AlarmSpec", "BackupAlarms", "BackupAlarmsArgs", "alarm_specs", "failed_runs_spec", "staleness_window"]
