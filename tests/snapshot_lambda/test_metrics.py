"""The runner's metrics: one CloudWatch Embedded Metric Format line per run, success or failure, checked against the
specification's required fields (tests/support/emf.py), with the values the node and etcd really report."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime

import pytest

from dr.core import metrics
from dr.core.errors import ConfigError, NodeError, NodeUnreachable
from dr.core.etcd_health import DEFAULT_QUOTA_BYTES
from sandbox import etcd as sandbox_etcd
from snapshot_lambda import handler as lh
from tests.support import emf
from tests.support.scheduled import lambda_env
from tests.support.tools import free_port


def _one_line(capsys) -> tuple[str, dict]:
    lines = emf.emf_lines(capsys.readouterr().out)
    assert len(lines) == 1, lines
    assert emf.problems(lines[0]) == []
    return lines[0], emf.metrics_of(lines[0])


def test_a_successful_run_reports_its_outcome_size_credential_and_etcd(runner_env, apid, sched_etcd, capsys):
    out = lh.handler({}, None)
    line, got = _one_line(capsys)
    root = json.loads(line)
    assert root["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TalosDR"
    assert root["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Cluster"]] and root["Cluster"] == "sandbox"
    assert abs(root["_aws"]["Timestamp"] / 1000 - time.time()) < 60  # milliseconds since the epoch
    assert got["SnapshotSuccess"] == (1.0, "Count")
    assert got["SnapshotBytes"] == (out["size"], "Bytes")
    assert got["SnapshotSeconds"][1] == "Seconds" and 0 < got["SnapshotSeconds"][0] < 60
    assert got["CredentialDaysLeft"][1] == "None" and 180 <= got["CredentialDaysLeft"][0] <= 365
    # the node's etcd, as the real etcd reports it (EtcdStatus through the apid)
    real = sandbox_etcd._call(sched_etcd.endpoint, "maintenance/status", {})
    assert got["EtcdDbSizeBytes"] == (int(real["dbSize"]), "Bytes")
    assert got["EtcdQuotaBytes"] == (DEFAULT_QUOTA_BYTES, "Bytes")
    assert got["EtcdActiveAlarms"] == (0.0, "Count")
    assert got["EtcdDbQuotaPercent"][1] == "Percent"
    assert root["event"] == "snapshot-uploaded" and root["key"] == out["key"]
    assert [c for c in apid.calls[-3:]] == [("os:etcd:backup", "ok"), ("os:etcd:backup", "EtcdStatus"),
                                            ("os:etcd:backup", "EtcdAlarmList")]


def test_a_failed_run_reports_the_failure(runner_env, monkeypatch, capsys):
    monkeypatch.setenv(lh.ENV_PORT, str(free_port()))
    with pytest.raises(NodeUnreachable):
        lh.handler({}, None)
    line, got = _one_line(capsys)
    assert got["SnapshotSuccess"] == (0.0, "Count")
    assert "SnapshotBytes" not in got and "EtcdDbSizeBytes" not in got  # unknown: left out, not zero
    assert json.loads(line)["event"] == "snapshot-failed" and json.loads(line)["error"] == "NodeUnreachable"


def test_a_run_that_fails_before_reading_its_settings_still_reports(monkeypatch, capsys):
    for k in (lh.ENV_BUCKET, lh.ENV_NODE, lh.ENV_CREDENTIAL_KEY, lh.ENV_CLUSTER):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ConfigError):
        lh.handler({}, None)
    _line, got = _one_line(capsys)
    assert got["SnapshotSuccess"][0] == 0.0


def test_the_document_builder_keeps_to_the_specification():
    now = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
    line = metrics.emf_line({"SnapshotSuccess": 1, "SnapshotBytes": math.nan, "EtcdDbQuotaPercent": 81.5},
                            cluster="prod", now=now, properties={"event": "x"})
    assert emf.problems(line) == []
    root = json.loads(line)
    assert root["_aws"]["Timestamp"] == 1796526000000
    assert "SnapshotBytes" not in root  # a NaN would make the whole document invalid
    assert {m["Name"] for m in root["_aws"]["CloudWatchMetrics"][0]["Metrics"]} == {"SnapshotSuccess",
                                                                                     "EtcdDbQuotaPercent"}
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.emf_document({"Nope": 1}, cluster="prod", now=now)
    assert all(m.unit in emf.UNITS for m in metrics.ALL)


def test_the_checker_refuses_what_the_specification_refuses():
    good = metrics.emf_line({"SnapshotSuccess": 1}, cluster="c", now=datetime.now(UTC))
    assert emf.problems(good) == []
    bad = json.loads(good)
    del bad["Cluster"]
    assert "dimension 'Cluster' has no string target member" in emf.problems(json.dumps(bad))
    bad = json.loads(good)
    bad["SnapshotSuccess"] = "1"
    assert any("no numeric target member" in p for p in emf.problems(json.dumps(bad)))
    bad = json.loads(good)
    del bad["_aws"]["Timestamp"]
    assert "_aws.Timestamp is not a number" in emf.problems(json.dumps(bad))
    assert emf.problems("[INFO] " + good)  # a prefixed line is not an EMF event


# --- on the sandbox: the node's etcd as Talos reports it ----------------------------------------------------------


@pytest.fixture
def node_runner(sandbox_factory, monkeypatch):
    """A sandbox (etcd quota 4 MiB, so etcd can be filled until it raises NOSPACE) and the runner's environment
    pointing at its node's apid, with the backup credential the stack would mint from its OS CA."""
    sb = sandbox_factory(etcd_quota_bytes=4 * 1024 * 1024)
    for k, v in {**sb.env, **lambda_env(sb, stall=3, quota=4 * 1024 * 1024)}.items():
        monkeypatch.setenv(k, v)
    return sb


def test_a_nospace_alarm_raised_by_etcd_itself_is_reported(node_runner, capsys):
    sb = node_runner
    n = sb.raise_nospace_alarm()
    assert n > 0 and sb.etcd_alarms() == ["NOSPACE"]
    lh.handler({}, None)  # a full etcd still serves a snapshot (reads work under NOSPACE)
    _line, got = _one_line(capsys)
    assert got["SnapshotSuccess"][0] == 1.0
    assert got["EtcdActiveAlarms"] == (1.0, "Count")
    assert got["EtcdQuotaBytes"][0] == 4 * 1024 * 1024
    assert got["EtcdDbQuotaPercent"][0] > 80  # filled to its quota


def test_a_stalled_etcd_is_reported_within_the_stall_timeout(node_runner, capsys):
    """etcd down on the node: machined accepts EtcdSnapshot and sends nothing; the runner stops after its stall
    timeout (3 s here) and says etcd is not answering, instead of waiting for the Lambda's own deadline."""
    node_runner.set_faults(etcd_fails="etcd data corrupt")
    began = time.monotonic()
    with pytest.raises(NodeError, match="etcd on the node is not answering") as ei:
        lh.handler({}, None)
    took = time.monotonic() - began
    assert 3 <= took < 3 + 10, took  # the stall timeout, not the 60 s run timeout
    assert "no data for 3s" in str(ei.value)
    _line, got = _one_line(capsys)
    assert got["SnapshotSuccess"][0] == 0.0
