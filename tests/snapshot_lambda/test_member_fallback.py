"""The Lambda's fallback between members (``_snapshot_from_members``): which failures move on to the next member of
the majority, in what order, and that the run's own time bounds it. ``take_snapshot`` is replaced by a recorder;
the three-node sandbox test (tests/commands/test_backup_ha.py) runs the real stream."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dr.core import member_choice
from dr.core.cluster_nodes import ClusterNode
from dr.core.errors import AccessDenied, NodeUnreachable, TruncatedSnapshot
from dr.core.etcd_health import EtcdHealth
from snapshot_lambda import handler as lh

NODES = [ClusterNode(f"10.0.{i}.10", f"10.0.{i}.10", f"10.0.{i}.10") for i in (1, 2, 3)]
IDS = (0xA1, 0xB2, 0xC3)
MEMBERS = tuple(member_choice.EtcdMember(IDS[i], f"cp-{i + 1}") for i in range(3))
NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


def _choice() -> member_choice.Choice:
    answers = [member_choice.NodeAnswer(n, MEMBERS, EtcdHealth(1, 1, 2 << 30, member_id=IDS[i], leader=IDS[0],
                                                               raft_term=2, raft_index=100, raft_applied_index=100))
               for i, n in enumerate(NODES)]
    return member_choice.choose(NODES, answers)


def _settings(**kw) -> lh.RunnerSettings:
    kw.setdefault("nodes", tuple(n.private_ip for n in NODES))
    return lh.RunnerSettings(bucket="b", node="10.0.1.10", credential_key="k", cluster="c", **kw)


def _recorder(monkeypatch, failures: dict[str, Exception]) -> list[tuple[str, datetime]]:
    calls: list[tuple[str, datetime]] = []

    def take(settings, credentials, *, s3_client=None, now=None, member=None):
        calls.append((settings.node, now))
        assert member is not None and member["ip"] == settings.node  # the record names the member streamed from
        if settings.node in failures:
            raise failures[settings.node]
        return lh.RunResult("b", f"snapshots/{settings.node}", 1, 1, "0" * 64, "zstd", now.isoformat())

    monkeypatch.setattr(lh, "take_snapshot", take)
    return calls


def test_followers_first_then_the_leader_each_failure_named(monkeypatch):
    calls = _recorder(monkeypatch, {"10.0.2.10": TruncatedSnapshot("cut"), "10.0.3.10": NodeUnreachable("gone")})
    observed: dict = {}
    used, result = lh._snapshot_from_members(_settings(), None, _choice(), observed, None, NOW)
    assert [c[0] for c in calls] == ["10.0.2.10", "10.0.3.10", "10.0.1.10"]
    assert calls[0][1] == NOW and all(c[1] >= NOW for c in calls)  # a later attempt is named for when it began
    assert used.node == "10.0.1.10" and result.key == "snapshots/10.0.1.10"
    assert observed["member"]["ip"] == "10.0.1.10"
    assert [f.split(":")[0] for f in observed["failed_members"]] == ["cp-2 (10.0.2.10)", "cp-3 (10.0.3.10)"]
    assert "TruncatedSnapshot" in observed["failed_members"][0]


def test_a_bucket_failure_is_not_the_members_and_is_not_retried_elsewhere(monkeypatch):
    calls = _recorder(monkeypatch, {"10.0.2.10": AccessDenied("no PutObject")})
    with pytest.raises(AccessDenied):
        lh._snapshot_from_members(_settings(), None, _choice(), {}, None, NOW)
    assert len(calls) == 1


def test_every_member_failing_raises_the_last_failure(monkeypatch):
    calls = _recorder(monkeypatch, {n.private_ip: NodeUnreachable(f"{n.private_ip} gone") for n in NODES})
    with pytest.raises(NodeUnreachable, match="10.0.1.10 gone"):
        lh._snapshot_from_members(_settings(), None, _choice(), {}, None, NOW)
    assert len(calls) == 3


def test_no_fallback_without_time_for_another_stream(monkeypatch):
    # less than two stall timeouts of the run's time left after the failure: the failure stands
    calls = _recorder(monkeypatch, {"10.0.2.10": NodeUnreachable("gone")})
    with pytest.raises(NodeUnreachable):
        lh._snapshot_from_members(_settings(timeout=50.0, stall_timeout=45.0), None, _choice(), {}, None, NOW)
    assert len(calls) == 1


def test_one_node_is_one_attempt(monkeypatch):
    calls: list[str] = []

    def take(settings, credentials, *, s3_client=None, now=None, member=None):
        calls.append(settings.node)
        assert member is None and now == NOW
        raise NodeUnreachable("gone")

    monkeypatch.setattr(lh, "take_snapshot", take)
    with pytest.raises(NodeUnreachable):
        lh._snapshot_from_members(_settings(nodes=()), None, None, {}, None, NOW)
    assert calls == ["10.0.1.10"]
