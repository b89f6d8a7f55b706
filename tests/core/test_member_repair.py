"""dr.core.member_repair: the checks and the next step of replacing one lost member, as a table of the states three
real nodes can be in (etcd v3.6.12 membership rules, Talos v1.13.9's join loop; the module docstring cites them)."""

from __future__ import annotations

import pytest

from dr.core import member_repair as mr
from dr.core.cluster_nodes import ClusterNode
from dr.core.errors import ConfigError
from dr.core.node_state import (
    ETCD_FAILED,
    ETCD_PREPARING,
    ETCD_RUNNING,
    MAINTENANCE,
    TRANSITIONING,
    UNREACHABLE,
    NodeState,
)

N1 = ClusterNode("cp-1", "10.0.1.5", "203.0.113.1", "i-1", "us-east-1a")
N2 = ClusterNode("cp-2", "10.0.2.5", "203.0.113.2", "i-2", "us-east-1b")
N3 = ClusterNode("cp-3", "10.0.3.5", "203.0.113.3", "i-3", "us-east-1c")


def member(node: ClusterNode, ident: int, learner: bool = False, started: bool = True) -> mr.Member:
    return mr.Member(f"{ident:016x}", f"ip-{node.private_ip.replace('.', '-')}" if started else "",
                     (f"https://{node.private_ip}:2380",),
                     (f"https://{node.private_ip}:2379",) if started else (), learner)


M1, M2, M3 = member(N1, 0x11), member(N2, 0x22), member(N3, 0x33)
NEW3 = member(N3, 0x3A, learner=True)
ALL = (M1, M2, M3)
RUNNING = NodeState(ETCD_RUNNING, "running", "Running")
DOWN = NodeState(UNREACHABLE, "unreachable")


def seen(node, state=RUNNING, members=ALL, health="OK"):
    answering = state.kind == ETCD_RUNNING
    return mr.Seen(node, state, members if answering else None, health if answering else None)


def three(n3_state=DOWN, members=ALL, n3_health="OK", n2=None):
    return [seen(N1, members=members), n2 or seen(N2, members=members),
            seen(N3, n3_state, members=members, health=n3_health)]


def journal(**kw) -> mr.RepairJournal:
    return mr.RepairJournal(target=N3.private_ip, target_name=N3.name, **kw)


CONFIRMED = mr.Options(confirmed=True, confirmed_mode=mr.BY_PULUMI, safety_done=True)


@pytest.mark.parametrize("name, view, j, o, action, detail", [
    # Before anything changed.
    ("lost instance: confirm, pulumi", three(), None, mr.Options(), mr.CONFIRM, mr.BY_PULUMI),
    ("answers, etcd failing: confirm, reset", three(NodeState(ETCD_FAILED, "running", "Failed")), None, mr.Options(),
     mr.CONFIRM, mr.BY_RESET),
    ("booting: settle first", three(NodeState(TRANSITIONING, "booting")), None, mr.Options(), mr.WAIT, mr.SETTLE),
    ("confirmed: safety snapshot", three(), None, mr.Options(confirmed=True), mr.SAFETY_SNAPSHOT, None),
    ("--no-safety-snapshot: remove", three(), None, mr.Options(confirmed=True, no_safety_snapshot=True), mr.REMOVE,
     None),
    ("snapshot done: remove", three(), None, CONFIRMED, mr.REMOVE, None),
    ("journal has the safety snapshot: remove", three(), journal(safety_snapshot="/x"), mr.Options(confirmed=True),
     mr.REMOVE, None),
    # The old member is still listed although the journal recorded its removal: remove again (NotFound is fine).
    ("recorded removal not done", three(), journal(removed_id=M3.id), CONFIRMED, mr.REMOVE, None),
    # Removed: rebuild.
    ("removed, instance gone: say pulumi up", three(members=(M1, M2)), journal(removed_id=M3.id), CONFIRMED,
     mr.REBUILD, mr.BY_PULUMI),
    ("pulumi said: wait for it", three(members=(M1, M2)), journal(removed_id=M3.id),
     mr.Options(rebuild_said=True), mr.WAIT, mr.REBUILT),
    ("removed by someone else, no journal: no confirmation needed to wait", three(members=(M1, M2)), None,
     mr.Options(), mr.REBUILD, mr.BY_PULUMI),
    ("new instance in maintenance: wait (pulumi applies its config)", three(NodeState(MAINTENANCE, "maintenance"),
     members=(M1, M2)), journal(removed_id=M3.id), mr.Options(rebuild_said=True), mr.WAIT, mr.REBUILT),
    ("join loop", three(NodeState(ETCD_PREPARING, "booting", "Preparing"), members=(M1, M2)),
     journal(removed_id=M3.id), mr.Options(), mr.WAIT, mr.JOIN),
    ("answers with stale data, not confirmed for a reset", three(NodeState(ETCD_FAILED, "running", "Failed"),
     members=(M1, M2)), journal(removed_id=M3.id), CONFIRMED, mr.CONFIRM, mr.BY_RESET),
    ("answers with stale data, reset confirmed", three(NodeState(ETCD_FAILED, "running", "Failed"),
     members=(M1, M2)), journal(removed_id=M3.id),
     mr.Options(confirmed=True, confirmed_mode=mr.BY_RESET), mr.RESET, mr.BY_RESET),
    ("reset sent, still failing: wait, never a second reset", three(NodeState(ETCD_FAILED, "running", "Failed"),
     members=(M1, M2)), journal(removed_id=M3.id, steps={mr.RESET: "t"}),
     mr.Options(confirmed=True, confirmed_mode=mr.BY_RESET), mr.WAIT, mr.REBUILT),
    ("reset sent, unreachable while it reboots: wait, not pulumi", three(members=(M1, M2)),
     journal(removed_id=M3.id, steps={mr.RESET: "t"}), mr.Options(), mr.WAIT, mr.REBUILT),
    ("running and its own list has it, the others' not yet: look again, never reset", [
        seen(N1, members=(M1, M2)), seen(N2, members=(M1, M2)),
        seen(N3, RUNNING, members=(M1, M2, member(N3, 0x3A)))], journal(removed_id=M3.id),
     mr.Options(confirmed=True, confirmed_mode=mr.BY_RESET), mr.WAIT, mr.AGREE),
    # Joining.
    ("learner: wait for promotion", three(NodeState(ETCD_RUNNING, "booting", "Running"), members=(M1, M2, NEW3)),
     journal(removed_id=M3.id), mr.Options(), mr.WAIT, mr.PROMOTE),
    ("learner without a journal (a join in progress): wait, never remove it", three(
        NodeState(ETCD_RUNNING, "booting", "Running"), members=(M1, M2, NEW3)), None, mr.Options(), mr.WAIT,
     mr.PROMOTE),
    ("voter, its etcd not healthy yet", three(NodeState(ETCD_RUNNING, "running", "Running"), n3_health="Fail",
                                              members=(M1, M2, member(N3, 0x3A))),
     journal(removed_id=M3.id), mr.Options(), mr.WAIT, mr.ETCD_HEALTHY),
    ("voter, all healthy: its Kubernetes Node", three(RUNNING, members=(M1, M2, member(N3, 0x3A))),
     journal(removed_id=M3.id), mr.Options(), mr.NODE_READY, None),
    # Refusals.
    ("healthy voter: nothing to replace", three(RUNNING), None, mr.Options(), mr.REFUSE, mr.HEALTHY),
    ("a second node down: quorum lost, restore", three(n2=seen(N2, DOWN)), None, mr.Options(), mr.REFUSE,
     mr.NO_QUORUM),
    ("second node's etcd failing health", three(n2=seen(N2, health="Fail")), None, mr.Options(), mr.REFUSE,
     mr.NO_QUORUM),
    ("the others disagree (a change being applied): look again", three(n2=seen(N2, members=(M1, M2))), None,
     mr.Options(), mr.WAIT, mr.AGREE),
    ("quorum lost while waiting for the join", three(members=(M1, M2), n2=seen(N2, DOWN)),
     journal(removed_id=M3.id), mr.Options(rebuild_said=True), mr.REFUSE, mr.NO_QUORUM),
])
def test_plan_table(name, view, j, o, action, detail):
    step = mr.plan(N3, view, j, o)
    assert step.action == action, (name, step)
    if detail is not None:
        assert detail in (step.phase, step.refusal, step.mode), (name, step)


def test_remove_names_the_lost_member_and_refusals_say_why():
    step = mr.plan(N3, three(), None, CONFIRMED)
    assert step.member == M3 and mr.hex_id(step.member) == "0000000000000033"
    lost = mr.plan(N3, three(n2=seen(N2, DOWN)), None, mr.Options())
    assert "1 healthy voting member(s) answer" in lost.why and "needs 2" in lost.why and "cp-2 unreachable" in lost.why


def test_one_node_is_refused():
    step = mr.plan(N1, [seen(N1, DOWN)], None, mr.Options())
    assert (step.action, step.refusal) == (mr.REFUSE, mr.ONE_NODE)


def test_quorum_counts_the_lost_voter_until_it_is_removed():
    q = mr.quorum_of_others(N3, three())
    assert isinstance(q, mr.Quorum) and (q.voters, q.needed, len(q.healthy)) == (3, 2, 2)
    q = mr.quorum_of_others(N3, three(members=(M1, M2)))
    assert isinstance(q, mr.Quorum) and (q.voters, q.needed) == (2, 2)
    # A learner is not a voter: it neither counts for the quorum nor makes one.
    q = mr.quorum_of_others(N3, three(members=(M1, M2, NEW3)))
    assert isinstance(q, mr.Quorum) and (q.voters, q.needed) == (2, 2)


def test_a_member_other_than_the_removed_one_is_the_nodes_new_member():
    # The sandbox's etcd picks a free peer port, so the removed member and the new one can be listed together for a
    # moment (a real node always uses 2380, and etcd refuses a second member with the same peer URL).
    new = mr.Member("3a", "ip-10-0-3-5", ("https://10.0.3.5:2381",), (), True)
    step = mr.plan(N3, three(RUNNING, members=(M1, M2, M3, new)), journal(removed_id=M3.id), mr.Options())
    assert (step.action, step.phase) == (mr.WAIT, mr.PROMOTE)


def test_member_of_matches_the_peer_url_then_the_name():
    assert mr.member_of(N3, ALL) == M3
    unstarted = member(N3, 0x44, learner=True, started=False)
    assert mr.member_of(N3, (M1, unstarted)) == unstarted  # no name yet, the peer URL says whose it is
    named = mr.Member("55", "cp-3", ("https://10.9.9.9:2380",))
    assert mr.member_of(N3, (M1, named)) == named
    assert mr.member_of(N3, (M1, M2)) is None


def test_find_target_by_name_or_address():
    nodes = [N1, N2, N3]
    assert mr.find_target(nodes, "cp-2") == N2
    assert mr.find_target(nodes, "10.0.3.5") == N3
    assert mr.find_target(nodes, "203.0.113.1") == N1
    with pytest.raises(ConfigError, match="no control-plane node of this stack is called 'cp-9'"):
        mr.find_target(nodes, "cp-9")
    with pytest.raises(ConfigError):
        mr.find_target([ClusterNode("x", "10.0.0.1", "1.1.1.1")], "")


def test_member_ids_are_talosctls_hex():
    assert mr.parse_member_id("0000000000000033") == 0x33
    assert mr.parse_member_id("8e9e05c52164694d") == 0x8E9E05C52164694D
    assert mr.hex_id(member(N1, 0x8E9E05C52164694D)) == "8e9e05c52164694d"
    assert mr.hex_id(mr.Member("33", "x")) == "0000000000000033"
    with pytest.raises(ConfigError):
        mr.parse_member_id("node-3")


def test_journal_round_trip_and_a_damaged_one():
    j = journal(removed_id="33", mode=mr.BY_PULUMI, steps={mr.REMOVE: "2026-12-07T01:00:00Z"})
    back = mr.parse(mr.dumps(j), "j.json")
    assert back == j and back.done(mr.REMOVE) and not back.done(mr.RESET)
    with pytest.raises(ConfigError, match="unreadable"):
        mr.parse("{", "j.json")
    with pytest.raises(ConfigError, match="unreadable"):
        mr.parse('{"format": 99}', "j.json")


def test_new_member_is_the_one_not_removed_as_the_others_list_it():
    new = member(N3, 0x3A, learner=True)
    assert mr.new_member(N3, three(RUNNING, members=(M1, M2, new)), M3.id) == new
    assert mr.new_member(N3, three(members=(M1, M2, M3)), M3.id) is None  # the removed one is not new
    assert mr.new_member(N3, three(members=(M1, M2)), M3.id) is None
    assert mr.new_member(N3, three(n2=seen(N2, DOWN)), "") is None  # no quorum: nothing to say
