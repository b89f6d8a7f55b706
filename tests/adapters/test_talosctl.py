"""dr/adapters/talosctl.py against talosctl's own output formats (tests/golden/talosctl/, rendered from siderolabs/talos
v1.13.9's format strings and from output pasted in its issues; each file names its source), not against the sandbox.

Placeholder addresses in the transcripts: the node's private IP 10.0.1.5, its Elastic IP 203.0.113.10."""

from __future__ import annotations

from pathlib import Path

import pytest

from dr.adapters.talosctl import NOT_READY, Talosctl, go_duration_seconds, parse_service, parse_snapshot_info
from dr.commands.restore import probe as probing
from dr.core import node_state as state
from dr.core.errors import ConfigError, NodeError, NodeUnreachable, RestoreConflict, TruncatedSnapshot

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "talosctl"
PRIVATE, PUBLIC = "10.0.1.5", "203.0.113.10"


def transcript(name: str) -> str:
    """The output part of a golden file: what follows its comment header."""
    text = (GOLDEN / name).read_text()
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines) and lines[i].startswith("#"):
        i += 1
    assert i < len(lines) and lines[i].strip() == "", f"{name}: a blank line must end the header"
    return "".join(lines[i + 1:])


def test_every_golden_file_cites_its_source():
    files = sorted(GOLDEN.glob("*.txt"))
    assert len(files) >= 30
    for f in files:
        header = [ln for ln in f.read_text().splitlines() if ln.startswith("#")]
        assert any(ln.startswith(("# source:", "# how:")) for ln in header), f.name
        assert any("v1.13.9" in ln or "siderolabs/talos#" in ln for ln in header), f.name


def tc() -> Talosctl:
    return Talosctl(PRIVATE, None, endpoint=PUBLIC, binary="/bin/true")


def test_snapshot_info_from_the_format_string():
    info = parse_snapshot_info(transcript("etcd-snapshot-success.txt"))
    assert info.revision is not None and info.total_keys is not None and info.total_size is not None
    assert info.hash is not None and len(info.hash) == 8


@pytest.mark.parametrize("text, seconds", [("0s", 0), ("42s", 42), ("1m30s", 90), ("2h0m5s", 7205),
                                           ("1h59m53s", 7193), ("350ms", 0.35), ("x", None), ("", None)])
def test_go_durations(text, seconds):
    assert go_duration_seconds(text) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize("name, st, health, newest, since_at_least", [
    ("service-etcd-running.txt", "Running", "OK", "Health check successful", 7000),
    ("service-etcd-preparing-waiting-for-bootstrap.txt", "Preparing", "?", "Running pre state", 600),
    ("service-etcd-after-bootstrap.txt", "Running", "?", "Started task etcd", 0),
    ("service-etcd-failed-bad-recovery.txt", "Failed", "?", "Failed to run pre stage: error recovering from the "
                                                            "snapshot: expected sha256", 30),
    ("service-etcd-crashloop.txt", "Waiting", "Fail", "Error running Containerd(etcd), going to restart forever", 0),
    ("service-etcd-failed-join-timeout.txt", "Failed", "?", "Failed to run pre stage: failed to build initial", 50),
])
def test_service_output(name, st, health, newest, since_at_least):
    svc = parse_service(transcript(name))
    assert svc is not None
    assert svc.state == st
    if health is not None:
        assert svc.health == health
    assert svc.last_message.startswith(newest)
    assert svc.since is not None and svc.since >= since_at_least
    assert len(svc.events) >= 4  # every event is read, newest first, multi-line messages whole
    assert svc.events[-1].state in ("Starting", "Preparing")
    assert all(e.age is not None for e in svc.events)
    assert [e.age for e in svc.events] == sorted(e.age for e in svc.events)


class Answers:
    """A node that answers with the golden transcripts: what probe() sees on a real node."""

    def __init__(self, stage_file: str | None, service_file: str | None = None, stage_error: str | None = None,
                 insecure_file: str | None = None):
        self.t = tc()
        self.stage_file, self.service_file = stage_file, service_file
        self.stage_error, self.insecure_file = stage_error, insecure_file

    def stage(self, *, insecure: bool = False) -> str:
        if insecure:
            if self.insecure_file is None:
                raise self.t.classify(transcript("connect-insecure-to-configured-node.txt"), "get machinestatus")
            return transcript(self.insecure_file).strip()
        if self.stage_error:
            raise self.t.classify(transcript(self.stage_error), "get machinestatus")
        assert self.stage_file
        return transcript(self.stage_file).strip()

    def service(self, service: str = "etcd"):
        assert self.service_file
        svc = parse_service(transcript(self.service_file))
        assert svc is not None
        return svc


@pytest.mark.parametrize("answers, kind", [
    (Answers("get-machinestatus-stage-running.txt", "service-etcd-running.txt"), state.ETCD_RUNNING),
    # waiting for bootstrap: the stage is booting, and etcd's service says Preparing (for minutes)
    (Answers("get-machinestatus-stage-booting.txt", "service-etcd-preparing-waiting-for-bootstrap.txt"),
     state.ETCD_PREPARING),
    # a crash loop shows as Waiting with health Fail, never as Running or "empty"
    (Answers("get-machinestatus-stage-booting.txt", "service-etcd-crashloop.txt"), state.ETCD_FAILED),
    # after a refused recovery the stage reads running, and etcd Failed
    (Answers("get-machinestatus-stage-running.txt", "service-etcd-failed-bad-recovery.txt"), state.ETCD_FAILED),
    (Answers(None, stage_error="connect-authenticated-to-maintenance-node.txt",
             insecure_file="get-machinestatus-stage-maintenance.txt"), state.MAINTENANCE),
    (Answers(None, stage_error="connect-refused.txt"), state.UNREACHABLE),
    (Answers(None, stage_error="connect-timeout.txt"), state.UNREACHABLE),
    # --nodes is the Elastic IP: apid answered and could not reach it; a settings mistake, not a dead node
    (Answers(None, stage_error="service-etcd-forward-unreachable-node.txt"), state.REFUSED),
])
def test_probe_of_real_answers(answers, kind):
    st = probing.probe(answers)
    assert st.kind == kind, st


def test_the_waiting_for_bootstrap_node_is_not_running_yet():
    st = probing.probe(Answers("get-machinestatus-stage-booting.txt", "service-etcd-preparing-waiting-for-bootstrap.txt"))
    assert st.stage == "booting" and st.etcd == "Preparing" and st.etcd_since >= 600


@pytest.mark.parametrize("name, error, words", [
    ("connect-refused.txt", NodeUnreachable, "does not answer"),
    ("connect-timeout.txt", NodeUnreachable, "does not answer"),
    ("connect-authenticated-to-maintenance-node.txt", NodeError, "TLS/certificate"),
    ("connect-insecure-to-configured-node.txt", NodeError, "TLS/certificate"),
    ("service-etcd-forward-unreachable-node.txt", ConfigError, "private IP"),
    # a stream call forwarded to an unreachable node reads like a dead endpoint: the hint names the likely mistake
    ("etcd-snapshot-forward-unreachable-node.txt", NodeUnreachable, "private IP"),
    ("bootstrap-data-dir-not-empty.txt", RestoreConflict, "not empty"),
    ("etcd-snapshot-checksum-not-found.txt", TruncatedSnapshot, "cut short"),
    ("etcd-snapshot-etcd-down.txt", TruncatedSnapshot, "cut short"),
])
def test_classify_real_errors(name, error, words):
    t = tc()
    if "forward" in name:  # the mistake that output comes from: --nodes is the Elastic IP
        t = Talosctl(PUBLIC, None, endpoint=PUBLIC, binary="/bin/true")
    exc = t.classify(transcript(name), "call")
    assert type(exc) is error, (name, exc)
    assert words in str(exc)


@pytest.mark.parametrize("name", ["bootstrap-not-available-yet.txt", "bootstrap-time-not-in-sync.txt",
                                  "bootstrap-recover-not-ready.txt"])
def test_not_ready_answers_are_retried(name):
    text = transcript(name)
    assert any(n in text for n in NOT_READY), name
