"""The restore's pure parts: durations, the journal file, how talosctl answers map to node states."""

from __future__ import annotations

import argparse
import json
import subprocess

import pytest

from dr.adapters import journal_file
from dr.adapters.etcdlocal import snapshot_status
from dr.adapters.talosctl import ServiceEvent, ServiceStatus
from dr.commands.cli import parse_duration
from dr.commands.restore import probe as probing
from dr.core import journal
from dr.core import node_state as state
from dr.core.errors import ConfigError, NodeError, NodeUnreachable


@pytest.mark.parametrize("text, seconds", [("900", 900), ("90s", 90), ("15m", 900), ("1h30m", 5400), ("0.5", 0.5),
                                           ("250ms", 0.25)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "0", "-5", "15 minutes", "m", "5x", "1h-1m"])
def test_parse_duration_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_journal_round_trip_is_private_and_atomic(tmp_path):
    path = journal.path_for(tmp_path / ".talos")
    assert journal_file.load(path) is None
    j = journal.Journal(spec="latest", snapshot_path="/s.db", snapshot_sha256="ab" * 32, snapshot_origin="s3://b/k",
                        node="203.0.113.7", cluster="c")
    journal_file.mark(path, j, journal.CONFIRMED)
    journal_file.mark(path, j, journal.RESET)
    assert path.stat().st_mode & 0o777 == 0o600
    assert not path.with_name(path.name + ".part").exists()
    back = journal_file.load(path)
    assert back == j
    assert back.past_point_of_no_return and back.last_step == journal.RESET
    assert set(json.loads(path.read_text())["steps"]) == {journal.CONFIRMED, journal.RESET}
    journal_file.remove(path)
    assert journal_file.load(path) is None


@pytest.mark.parametrize("content", ["{not json", "[]", json.dumps({"format": 99})])
def test_unreadable_journal_is_a_config_error(tmp_path, content):
    path = tmp_path / journal.JOURNAL_NAME
    path.write_text(content)
    with pytest.raises(ConfigError, match="unreadable"):
        journal_file.load(path)


class FakeTalosctl:
    """Answers like talosctl for a node in a given situation (stage(), stage(insecure=True), service())."""

    node = "10.0.1.5"

    def __init__(self, stage=None, insecure_stage=None, etcd=None, stage_error=None, insecure_error=None,
                 health="OK", since=5.0, message=""):
        self._stage, self._insecure, self._etcd = stage, insecure_stage, etcd
        self._stage_error, self._insecure_error = stage_error, insecure_error
        self._health, self._since, self._message = health, since, message

    def stage(self, *, insecure=False):
        if insecure:
            if self._insecure_error:
                raise self._insecure_error
            return self._insecure
        if self._stage_error:
            raise self._stage_error
        return self._stage

    def service(self, service="etcd"):
        if self._etcd is None:
            raise NodeError('service etcd: rpc error: code = NotFound desc = service "etcd" not found')
        return ServiceStatus(self._etcd, self._health, (ServiceEvent(self._etcd, self._message, self._since),))


TLS = NodeError("get machinestatus on node x failed: TLS/certificate error: x509: certificate signed by unknown "
                "authority")
REFUSED_CONN = NodeUnreachable("node does not answer (connection refused)")
FORWARD = ConfigError("get machinestatus: the node at 203.0.113.10 answered, but could not reach node 203.0.113.10")


@pytest.mark.parametrize("t, kind", [
    (FakeTalosctl("running", etcd="Running"), state.ETCD_RUNNING),
    # the stage is not what tells etcd's state: a waiting node is booting, and is asked about etcd all the same
    (FakeTalosctl("booting", etcd="Preparing", health="?", since=900), state.ETCD_PREPARING),
    (FakeTalosctl("booting", etcd="Running"), state.ETCD_RUNNING),
    (FakeTalosctl("running", etcd="Failed", health="?"), state.ETCD_FAILED),
    (FakeTalosctl("booting", etcd="Waiting", health="Fail", message="Error running Containerd(etcd), going to "
                  "restart forever: task \"etcd\" failed: exit code 1"), state.ETCD_FAILED),
    (FakeTalosctl("booting", etcd="Waiting", health="?", message="Waiting for etcd spec"), state.TRANSITIONING),
    (FakeTalosctl("running", etcd="Finished", health="?"), state.ETCD_STOPPED),
    (FakeTalosctl("booting", etcd="Starting", health="?"), state.TRANSITIONING),
    (FakeTalosctl("booting"), state.TRANSITIONING),  # no etcd service yet
    (FakeTalosctl("rebooting", etcd="Running"), state.TRANSITIONING),
    (FakeTalosctl(stage_error=TLS, insecure_stage="maintenance"), state.MAINTENANCE),
    (FakeTalosctl(stage_error=TLS, insecure_stage="booting"), state.TRANSITIONING),
    (FakeTalosctl(stage_error=TLS, insecure_error=TLS), state.REFUSED),
    (FakeTalosctl(stage_error=FORWARD), state.REFUSED),
    (FakeTalosctl(stage_error=REFUSED_CONN), state.UNREACHABLE),
])
def test_probe_maps_answers_to_states(t, kind):
    assert probing.probe(t).kind == kind


def test_snapshot_status_reads_revision_and_keys(real_snapshot):
    st = snapshot_status(real_snapshot, optional=True)
    expected = json.loads(subprocess.run(["etcdctl", "snapshot", "status", str(real_snapshot), "-w", "json"],
                                         capture_output=True, text=True, check=True,
                                         env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}).stdout)
    assert (st.revision, st.total_keys) == (expected["revision"], expected["totalKey"])


def test_snapshot_status_without_etcd_tools_is_unknown(real_snapshot, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    st = snapshot_status(real_snapshot, optional=True)
    assert st.tool is None and st.revision is None
