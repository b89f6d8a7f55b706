"""The scheduled runner's metrics, as CloudWatch Embedded Metric Format (EMF) log lines. Pure: no I/O, the clock is
an argument.

Why EMF: the Lambda's subnet has no route to the CloudWatch API (only the S3 gateway endpoint), and an interface
endpoint for it would cost more than the whole backup pipeline. A log line in EMF is turned into metrics by CloudWatch
Logs itself, from the log group the function already writes to: no API call, no endpoint.

The format, from the specification (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/
CloudWatch_Embedded_Metric_Format_Specification.html):

* the log event is one JSON object with nothing before or after it;
* its root has ``_aws``: ``{"Timestamp": <ms since the epoch>, "CloudWatchMetrics": [MetricDirective, ...]}``;
* a MetricDirective is ``{"Namespace": str, "Dimensions": [[dimension name, ...], ...], "Metrics":
  [{"Name": str, "Unit": str}, ...]}`` (at most 100 metrics, at most 30 dimensions per set);
* every name a directive references (each metric and each dimension) is a *target member* of the root: a metric's
  value a number (or an array of numbers), a dimension's value a string;
* Unit is one of CloudWatch's units (``MetricDatum`` Unit values, CloudWatch API reference).

Names here are shared with the alarms (``infra/alarms.py``) and ``talos-dr status`` (``dr/core/status.py``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

NAMESPACE = "TalosDR"
DIMENSION = "Cluster"  # one dimension: the stack's cluster name (one metric series per cluster)


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str


# One per run: 1 when it stored a snapshot, 0 when it failed. Sum over a period = successful runs; Minimum 0 = a run
# failed in it. (One metric, not two: each custom metric is billed, $0.30 a month; see docs/MONITORING.md.)
SNAPSHOT_SUCCESS = Metric("SnapshotSuccess", "Count")
SNAPSHOT_SECONDS = Metric("SnapshotSeconds", "Seconds")  # the run's wall time
SNAPSHOT_BYTES = Metric("SnapshotBytes", "Bytes")  # the snapshot's own size (what etcd sent)
CREDENTIAL_DAYS_LEFT = Metric("CredentialDaysLeft", "None")  # days until the os:etcd:backup certificate ends
ETCD_DB_SIZE = Metric("EtcdDbSizeBytes", "Bytes")
ETCD_QUOTA = Metric("EtcdQuotaBytes", "Bytes")
ETCD_DB_PERCENT = Metric("EtcdDbQuotaPercent", "Percent")
ETCD_ALARMS = Metric("EtcdActiveAlarms", "Count")  # NOSPACE, CORRUPT: any is a reason to act

ALL: tuple[Metric, ...] = (SNAPSHOT_SUCCESS, SNAPSHOT_SECONDS, SNAPSHOT_BYTES, CREDENTIAL_DAYS_LEFT, ETCD_DB_SIZE,
                           ETCD_QUOTA, ETCD_DB_PERCENT, ETCD_ALARMS)
BY_NAME = {m.name: m for m in ALL}


def emf_document(values: Mapping[str, float], *, cluster: str, now: datetime, namespace: str = NAMESPACE,
                 properties: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One EMF document for ``values`` (metric name -> number; names from this module). ``properties`` are extra
    root members (the event name, the key written): the specification lets the root carry any other member, and
    CloudWatch Logs Insights can query them. A value that is not a finite number is left out (it would invalidate
    the whole document)."""
    kept = {name: float(v) for name, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}
    unknown = sorted(set(kept) - set(BY_NAME))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}")
    root: dict[str, Any] = dict(properties or {})
    root.update(kept)
    root[DIMENSION] = cluster
    root["_aws"] = {
        "Timestamp": int(now.timestamp() * 1000),
        "CloudWatchMetrics": [
            {
                "Namespace": namespace,
                "Dimensions": [[DIMENSION]],
                "Metrics": [{"Name": name, "Unit": BY_NAME[name].unit} for name in sorted(kept)],
            }
        ],
    }
    return root


def emf_line(values: Mapping[str, float], *, cluster: str, now: datetime, namespace: str = NAMESPACE,
             properties: Mapping[str, Any] | None = None) -> str:
    """``emf_document`` as the single line the function prints (compact JSON, no newline inside)."""
    return json.dumps(emf_document(values, cluster=cluster, now=now, namespace=namespace, properties=properties),
                      separators=(",", ":"), sort_keys=True)


# Which etcd member a run read from (several control-plane nodes; dr.core.member_choice), as root members of the
# document: properties, not dimensions (a dimension per member would split every metric series and the alarms on
# them each time the choice moves). CloudWatch Logs Insights can query them.
MEMBER_PROPERTIES = {"node": "EtcdMemberNode", "ip": "EtcdMemberIp", "id": "EtcdMemberId", "quorum": "EtcdQuorum"}


def member_properties(member: Mapping[str, str] | None, members: list[str] | None = None,
                      failed: list[str] | None = None) -> dict[str, Any]:
    """``Choice.record()`` (and each member's state, one line each; each member whose snapshot failed before another
    was tried, with why) as EMF properties; {} with one node."""
    out: dict[str, Any] = {}
    for field, name in MEMBER_PROPERTIES.items():
        if member and member.get(field):
            out[name] = str(member[field])
    if members:
        out["EtcdMembers"] = [str(m) for m in members]
    if failed:
        out["EtcdMembersFailed"] = [str(m) for m in failed]
    return out
