"""A checker for CloudWatch Embedded Metric Format documents, written from the specification, independently of the
code that produces them (dr.core.metrics):
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html

* Root node: the log event is a JSON object, nothing before or after it; it MUST contain ``_aws`` (the metadata
  object) and every target member its MetricDirectives reference.
* Metadata object ``_aws``: MUST contain ``CloudWatchMetrics`` (array of MetricDirective) and ``Timestamp`` (a number:
  milliseconds since 1970-01-01 UTC).
* MetricDirective: MUST contain ``Namespace`` (string), ``Dimensions`` (array of DimensionSet; a DimensionSet is an
  array of strings, at most 30, each naming a root member whose value is a string) and ``Metrics`` (array of at most
  100 MetricDefinition).
* MetricDefinition: MUST contain ``Name`` (string, a reference to a root member whose value is a number or an array
  of at most 100 numbers); MAY contain ``Unit`` (one of CloudWatch's MetricDatum units) and ``StorageResolution``
  (1 or 60).
* The whole event is at most 1 MB.
"""

from __future__ import annotations

import json
import numbers
from typing import Any

UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes", "Bits",
    "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second", "Kilobytes/Second",
    "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
    "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
}  # fmt: skip


def _number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def problems(line: str) -> list[str]:
    """Every way ``line`` (one log event) breaks the specification; empty when it conforms."""
    out: list[str] = []
    if len(line.encode()) > 1024 * 1024:
        out.append("larger than 1 MB")
    if line != line.strip() or "\n" in line:
        out.append("data before or after the JSON object, or more than one line")
    try:
        root = json.loads(line)
    except ValueError as exc:
        return [*out, f"not JSON: {exc}"]
    if not isinstance(root, dict):
        return [*out, "the root is not an object"]
    meta = root.get("_aws")
    if not isinstance(meta, dict):
        return [*out, "no _aws metadata object"]
    if not _number(meta.get("Timestamp")):
        out.append("_aws.Timestamp is not a number")
    directives = meta.get("CloudWatchMetrics")
    if not isinstance(directives, list) or not directives:
        return [*out, "_aws.CloudWatchMetrics is not a non-empty array"]
    for d in directives:
        out += _directive_problems(d, root)
    return out


def _directive_problems(d: Any, root: dict) -> list[str]:
    if not isinstance(d, dict):
        return ["a MetricDirective is not an object"]
    out = []
    if not isinstance(d.get("Namespace"), str) or not d["Namespace"]:
        out.append("MetricDirective without a Namespace string")
    dims = d.get("Dimensions")
    if not isinstance(dims, list):
        out.append("MetricDirective without a Dimensions array")
        dims = []
    for dset in dims:
        if not isinstance(dset, list) or len(dset) > 30 or not all(isinstance(x, str) for x in dset):
            out.append(f"DimensionSet {dset!r} is not an array of at most 30 strings")
            continue
        out += [f"dimension {name!r} has no string target member" for name in dset if not isinstance(root.get(name), str)]
    mets = d.get("Metrics")
    if not isinstance(mets, list) or len(mets) > 100:
        out.append("MetricDirective without a Metrics array of at most 100")
        mets = []
    for m in mets:
        out += _metric_problems(m, root)
    return out


def _metric_problems(m: Any, root: dict) -> list[str]:
    if not isinstance(m, dict) or not isinstance(m.get("Name"), str):
        return [f"MetricDefinition {m!r} without a Name"]
    out = []
    if "Unit" in m and m["Unit"] not in UNITS:
        out.append(f"metric {m['Name']}: unit {m['Unit']!r} is not a CloudWatch unit")
    if "StorageResolution" in m and m["StorageResolution"] not in (1, 60):
        out.append(f"metric {m['Name']}: StorageResolution must be 1 or 60")
    value = root.get(m["Name"])
    ok = _number(value) or (isinstance(value, list) and 0 < len(value) <= 100 and all(map(_number, value)))
    if not ok:
        out.append(f"metric {m['Name']} has no numeric target member (got {value!r})")
    return out


def metrics_of(line: str) -> dict[str, tuple[float, str]]:
    """name -> (value, unit) of every metric a conforming line defines."""
    root = json.loads(line)
    return {m["Name"]: (root[m["Name"]], m.get("Unit", "None"))
            for d in root["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}


def emf_lines(text: str) -> list[str]:
    """The lines of captured stdout that are EMF documents (a JSON object with ``_aws``)."""
    return [ln for ln in text.splitlines() if ln.startswith("{") and '"_aws"' in ln]


def publish(line: str, client) -> int:
    """Do what CloudWatch Logs does with an EMF event (the specification: each MetricDirective's metrics, with the
    root's values, under each DimensionSet, at ``_aws.Timestamp``) as PutMetricData calls to ``client`` (moto's
    CloudWatch): the stand-in for the extraction AWS runs on the Lambda's log group. Returns the datapoints put."""
    from datetime import UTC, datetime

    assert problems(line) == [], problems(line)
    root = json.loads(line)
    at = datetime.fromtimestamp(root["_aws"]["Timestamp"] / 1000, UTC)
    n = 0
    for d in root["_aws"]["CloudWatchMetrics"]:
        for dset in d["Dimensions"] or [[]]:
            data = [{"MetricName": m["Name"], "Value": float(root[m["Name"]]), "Unit": m.get("Unit", "None"),
                     "Timestamp": at, "Dimensions": [{"Name": k, "Value": root[k]} for k in dset]}
                    for m in d["Metrics"]]
            client.put_metric_data(Namespace=d["Namespace"], MetricData=data)
            n += len(data)
    return n
