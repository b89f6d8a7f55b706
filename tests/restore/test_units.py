"""The restore's pure parts: durations, the journal file, how talosctl answers map to node states."""

from __future__ import annotations

import argparse
import json
import subprocess

import pytest

from dr import journal, restore
from dr.errors import ConfigError, NodeError, NodeUnreachable


@pytest.mark.parametrize("text, seconds", [("900", 900), ("90s", 90), ("15m", 900), ("1h30m", 5400), ("0.5", 0.5),
                                           ("250ms", 0.25)])
def test_parse_duration(text, seconds):
    assert restore.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "0", "-5", "15 minutes", "m", "5x", "1h-1m"])
def test_parse_duration_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        restore.parse_duration(text)


def test_journal_round_trip_is_private_and_atomic(tmp_path):
    path = journal.path_for(tmp_path / ".talos")
    assert journal.load(path) is None
    j = journal.Journal(spec="latest", snapshot_path="/s.db", snapshot_sha256="ab" * 32, snapshot_origin="s3://b/k",
                        node="203.0.113.7", cluster="c")
    journal.mark(path, j, journal.CONFIRMED)
    journal.mark(path, j, journal.RESET)
    assert path.stat().st_mode & 0o777 == 0o600
    assert not path.with_name(path.name + ".part").exists()
    back = journal.load(path)
    assert back == j
    assert back.past_point_of_no_return and back.last_step == journal.RESET
    assert set(json.loads(path.read_text())["steps"]) == {journal.CONFIRMED, journal.RESET}
    journal.remove(path)
    assert journal.load(path) is None


@pytest.mark.parametrize("content", ["{not json", "[]", json.dumps({"format": 99})])
def test_unreadable_journal_is_a_config_error(tmp_path, content):
    path = tmp_path / journal.JOURNAL_NAME
    path.write_text(content)
    with pytest.raises(ConfigError, match="unreadable"):
        journal.load(path)


class FakeTalosctl:
    """Answers like talosctl for a node in a given situation (stage(), stage(insecure=True), service_state())."""

    node = "203.0.113.7"

    def __init__(self, stage=None, insecure_stage=None, etcd=None, stage_error=None, insecure_error=None):
        self._stage, self._insecure, self._etcd = stage, insecure_stage, etcd
        self._stage_error, self._insecure_error = stage_error, insecure_error

    def stage(self, *, insecure=False):
        if insecure:
            if self._insecure_error:
                raise self._insecure_error
            return self._insecure
        if self._stage_error:
            raise self._stage_error
        return self._stage

    def service_state(self, service="etcd"):
        return self._etcd


TLS = NodeError("get machinestatus on node x failed: TLS/certificate error: x509: certificate signed by unknown "
                "authority")
REFUSED_CONN = NodeUnreachable("node does not answer (connection refused)")


@pytest.mark.parametrize("t, kind", [
    (FakeTalosctl("running", etcd="Running"), restore.ETCD_RUNNING),
    (FakeTalosctl("running", etcd="Preparing"), restore.ETCD_WAITING),
    (FakeTalosctl("running", etcd="Finished"), restore.ETCD_STOPPED),
    (FakeTalosctl("running", etcd="Starting"), restore.TRANSITIONING),
    (FakeTalosctl("booting"), restore.TRANSITIONING),
    (FakeTalosctl(stage_error=TLS, insecure_stage="maintenance"), restore.MAINTENANCE),
    (FakeTalosctl(stage_error=TLS, insecure_stage="booting"), restore.TRANSITIONING),
    (FakeTalosctl(stage_error=TLS, insecure_error=TLS), restore.REFUSED),
    (FakeTalosctl(stage_error=REFUSED_CONN), restore.UNREACHABLE),
])
def test_probe_maps_answers_to_states(t, kind):
    assert restore.probe(t).kind == kind


def test_snapshot_status_reads_revision_and_keys(real_snapshot):
    st = restore.snapshot_status(real_snapshot)
    expected = json.loads(subprocess.run(["etcdctl", "snapshot", "status", str(real_snapshot), "-w", "json"],
                                         capture_output=True, text=True, check=True,
                                         env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}).stdout)
    assert (st.revision, st.total_keys) == (expected["revision"], expected["totalKey"])


def test_snapshot_status_without_etcd_tools_is_unknown(real_snapshot, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert restore.snapshot_status(real_snapshot) == restore.SnapshotStatus(None, None, None)
