"""CloudWatch, read from the operator's machine for `talos-dr status`: the scheduled runs' metrics (written by the
Lambda as Embedded Metric Format log lines, ``dr.core.metrics``) and the state of the backup alarms
(``infra/alarms.py``). Read-only: GetMetricStatistics and DescribeAlarms.

Why the metrics and not S3 alone: an object in the bucket shows a run that succeeded, never one that failed, and
failures are what the operator needs to see. The metrics carry both outcomes, every run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from dr.core import metrics
from dr.core.errors import AccessDenied, S3Error

# GetMetricStatistics returns at most 1,440 datapoints per call (CloudWatch API reference, GetMetricStatistics).
MAX_DATAPOINTS = 1440
# The alarms' resource names (infra/alarms.py AlarmSpec.key); Pulumi appends a random suffix to each physical name.
ALARM_KEYS = ("no-snapshot", "credential-expiry", "etcd-alarm", "etcd-quota", "failed-runs")


def make_client(region: str | None = None):
    """A CloudWatch client (endpoint from AWS_ENDPOINT_URL_CLOUDWATCH / AWS_ENDPOINT_URL when set, as boto3 reads)."""
    import boto3
    from botocore.config import Config

    return boto3.client("cloudwatch", region_name=region,
                        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10,
                                      read_timeout=20))


def _wrap(exc: Exception, what: str) -> S3Error:
    """One DRError for a failed CloudWatch read (the S3 error classes carry AWS's codes and exit codes)."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            return AccessDenied(f"CloudWatch refused {what}: {code}",
                                "use credentials allowed cloudwatch:GetMetricStatistics and cloudwatch:DescribeAlarms")
        return S3Error(f"CloudWatch {what} failed: {code or exc}")
    return S3Error(f"CloudWatch {what} failed: {exc}", "check the network and your AWS credentials")


@dataclass(frozen=True)
class Datapoint:
    at: datetime
    value: float


def datapoints(client, cluster: str, metric: str, statistic: str, start: datetime, end: datetime,
               namespace: str = metrics.NAMESPACE) -> list[Datapoint]:
    """The metric's datapoints for ``cluster`` between ``start`` and ``end``, oldest first, at the finest period the
    API allows for that range (whole minutes)."""
    from botocore.exceptions import BotoCoreError, ClientError

    span = max((end - start).total_seconds(), 60.0)
    period = max(60, math.ceil(span / MAX_DATAPOINTS / 60) * 60)
    try:
        resp = client.get_metric_statistics(
            Namespace=namespace, MetricName=metric, Dimensions=[{"Name": metrics.DIMENSION, "Value": cluster}],
            StartTime=start, EndTime=end, Period=period, Statistics=[statistic],
        )
    except (ClientError, BotoCoreError) as exc:
        raise _wrap(exc, f"GetMetricStatistics {metric}") from exc
    points = [Datapoint(p["Timestamp"], float(p[statistic])) for p in resp.get("Datapoints", []) if statistic in p]
    return sorted(points, key=lambda p: p.at)


@dataclass(frozen=True)
class Runs:
    """The newest run, and the newest successful one, the metrics show in a window."""

    last_at: datetime | None
    last_ok: bool | None
    last_success: datetime | None
    credential_days: Datapoint | None  # the newest CredentialDaysLeft a run reported
    etcd_quota: float | None  # the newest EtcdQuotaBytes a run reported


def runs(client, cluster: str, now: datetime, window: timedelta, namespace: str = metrics.NAMESPACE) -> Runs:
    start = now - window
    # The period holding `now` is still open; ask up to a minute past it so the newest run's datapoint is in the answer
    # (a range ending mid-period can leave that period out).
    end = now + timedelta(minutes=1)
    # SnapshotSuccess is 1 or 0 per run: a period whose Maximum is 1 saw a success, one whose Minimum is 0 a failure.
    ok = [p for p in datapoints(client, cluster, metrics.SNAPSHOT_SUCCESS.name, "Maximum", start, end, namespace)
          if p.value > 0]
    bad = [p for p in datapoints(client, cluster, metrics.SNAPSHOT_SUCCESS.name, "Minimum", start, end, namespace)
           if p.value == 0]
    last_ok, last_bad = (ok[-1].at if ok else None), (bad[-1].at if bad else None)
    if last_ok is None and last_bad is None:
        last_at, outcome = None, None
    # Within one period the order is unknown: a failure there is shown (Lambda's retries are a minute or more apart).
    elif last_bad is None or (last_ok is not None and last_ok > last_bad):
        last_at, outcome = last_ok, True
    else:
        last_at, outcome = last_bad, False
    days = datapoints(client, cluster, metrics.CREDENTIAL_DAYS_LEFT.name, "Minimum", start, end, namespace)
    quota = datapoints(client, cluster, metrics.ETCD_QUOTA.name, "Maximum", start, end, namespace)
    return Runs(last_at=last_at, last_ok=outcome, last_success=last_ok, credential_days=days[-1] if days else None,
                etcd_quota=quota[-1].value if quota else None)


def backup_alarms(client, cluster: str) -> list[tuple[str, str]]:
    """(name, state) of this cluster's backup alarms: ``<cluster>-<key>-<suffix>`` as Pulumi names them."""
    from botocore.exceptions import BotoCoreError, ClientError

    pattern = re.compile(rf"^{re.escape(cluster)}-({'|'.join(ALARM_KEYS)})(-[0-9a-z]+)?$")
    found: list[tuple[str, str]] = []
    try:
        for page in client.get_paginator("describe_alarms").paginate(AlarmNamePrefix=f"{cluster}-",
                                                                     AlarmTypes=["MetricAlarm"]):
            found += [(a["AlarmName"], a["StateValue"]) for a in page.get("MetricAlarms", [])
                      if pattern.match(a["AlarmName"])]
    except (ClientError, BotoCoreError) as exc:
        raise _wrap(exc, "DescribeAlarms") from exc
    return sorted(found)


def firing(alarms: Sequence[tuple[str, str]]) -> list[str]:
    return [name for name, state in alarms if state == "ALARM"]
