"""dr.core.member_choice: which member a backup reads from, every branch, from made-up answers (pure, no I/O)."""

from __future__ import annotations

import pytest

from dr.core.cluster_nodes import ClusterNode
from dr.core.errors import ExitCode, NoQuorum
from dr.core.etcd_health import EtcdHealth
from dr.core.member_choice import MAX_LAG, EtcdMember, NodeAnswer, choose, judge

NODES = [ClusterNode(f"cp-{i}", f"10.0.{i}.10", f"203.0.113.{i}") for i in (1, 2, 3)]
IDS = {1: 0xA1, 2: 0xB2, 3: 0xC3}
MEMBERS = tuple(EtcdMember(IDS[i], f"cp-{i}", (f"https://10.0.{i}.10:2380",), (f"https://10.0.{i}.10:2379",))
                for i in (1, 2, 3))


def status(i: int, *, leader: int = IDS[1], term: int = 4, index: int = 1000, applied: int | None = None,
           learner: bool = False, alarms: tuple = ()) -> EtcdHealth:
    return EtcdHealth(db_size=1 << 20, db_size_in_use=1 << 19, quota=2 << 30, member_id=IDS[i], leader=leader,
                      raft_term=term, raft_index=index, raft_applied_index=index if applied is None else applied,
                      is_learner=learner, member_alarms=alarms, alarms=tuple(a for _, a in alarms))


def answer(i: int, **kw) -> NodeAnswer:
    return NodeAnswer(NODES[i - 1], MEMBERS, status(i, **kw))


def down(i: int) -> NodeAnswer:
    return NodeAnswer(NODES[i - 1], None, None, "etcd status from 10.0.x.10 failed: the node does not answer")


def test_three_healthy_prefers_an_up_to_date_follower():
    c = choose(NODES, [answer(1, index=1010), answer(2, index=1005), answer(3, index=1008)])
    assert c.quorum and c.judgement.leader == IDS[1] and len(c.judgement.agreeing) == 3
    assert c.source.node == NODES[2] and c.source.state == "follower"  # the follower with the most applied
    assert "follower" in c.reason and c.member_id_hex == "c3"
    assert [s.state for s in c.judgement.states] == ["leader", "follower", "follower"]


def test_followers_too_far_behind_mean_the_leader():
    lead = 100_000
    c = choose(NODES, [answer(1, index=lead), answer(2, index=lead, applied=lead - MAX_LAG - 1),
                       answer(3, index=lead, applied=lead - MAX_LAG - 50)])
    assert c.source.node == NODES[0] and c.source.state == "leader" and "no follower" in c.reason
    # exactly MAX_LAG behind is still up to date
    c = choose(NODES, [answer(1, index=lead), answer(2, index=lead, applied=lead - MAX_LAG), answer(3, applied=1)])
    assert c.source.node == NODES[1]


def test_one_node_down_still_has_quorum_and_says_which_is_down():
    c = choose(NODES, [answer(1), down(2), answer(3)])
    assert c.quorum and c.source.node == NODES[2]
    states = {s.node.name: s for s in c.judgement.states}
    assert states["cp-2"].state == "not answering" and not states["cp-2"].healthy
    # the leader's node down: the followers agree on it; one of them is the source
    c = choose(NODES, [down(1), answer(2), answer(3, index=990)])
    assert c.quorum and c.source.node == NODES[1]


def test_two_down_refuses_with_exit_28_and_the_raw_copy():
    no_leader = NodeAnswer(NODES[0], None, status(1, leader=0), "etcd member list: its etcd member has no leader")
    with pytest.raises(NoQuorum) as info:
        choose(NODES, [no_leader, down(2), down(3)])
    err = info.value
    assert err.exit_code == ExitCode.NO_QUORUM == 28
    assert "0 of 3 voting members" in err.message and "(2 needed)" in err.message
    assert "cp-1 (10.0.1.10): no leader" in err.message and "cp-2 (10.0.2.10): not answering" in err.message
    # the hint names the member that answered: a stale snapshot on request, then the raw copy and its restore
    assert "talos-dr backup --node 10.0.1.10 --no-quorum-ok" in err.hint
    assert "talosctl -n 10.0.1.10 -e 203.0.113.1 cp /var/lib/etcd/member/snap/db ." in err.hint
    assert "talos-dr restore --from-data-dir-copy ./db" in err.hint


def test_no_quorum_accepted_picks_the_named_node_or_the_most_applied():
    answers = [NodeAnswer(NODES[0], None, status(1, leader=0, index=50)), down(2),
               NodeAnswer(NODES[2], None, status(3, leader=0, index=70))]
    c = choose(NODES, answers, allow_no_quorum=True)
    assert not c.quorum and c.source.node == NODES[2] and "may miss" in c.reason
    c = choose(NODES, answers, node="10.0.1.10", allow_no_quorum=True)
    assert not c.quorum and c.source.node == NODES[0]
    with pytest.raises(NoQuorum):  # nobody answered at all: nothing to take a snapshot from
        choose(NODES, [down(1), down(2), down(3)], allow_no_quorum=True)


def test_split_leaders_without_a_majority_refuse():
    # an old leader cut off still names itself; the other two each follow a different leader: no majority
    answers = [answer(1, leader=IDS[1], term=4), answer(2, leader=IDS[2], term=5), answer(3, leader=IDS[3], term=6)]
    with pytest.raises(NoQuorum, match="1 of 3 voting members"):
        choose(NODES, answers)


def test_split_leaders_with_a_majority_leave_out_the_old_leader():
    answers = [answer(1, leader=IDS[1], term=4), answer(2, leader=IDS[3], term=5), answer(3, leader=IDS[3], term=5)]
    c = choose(NODES, answers)
    assert c.judgement.leader == IDS[3] and c.source.node == NODES[1]  # the follower, not the new leader
    states = {s.node.name: s for s in c.judgement.states}
    assert states["cp-1"].state == "other leader" and not states["cp-1"].healthy


def test_a_learner_is_no_voter_and_never_the_source():
    members = (MEMBERS[0], MEMBERS[1], EtcdMember(IDS[3], "cp-3", is_learner=True))
    answers = [NodeAnswer(NODES[0], members, status(1)), NodeAnswer(NODES[1], members, status(2)),
               NodeAnswer(NODES[2], members, status(3, learner=True, index=2000))]
    j = judge(NODES, answers)
    assert j.voting_count == 2 and j.needed == 2 and j.has_quorum
    c = choose(NODES, answers)
    assert c.source.node == NODES[1] and {s.node.name: s.state for s in j.states}["cp-3"] == "learner"
    # two voters, one of them down: no quorum (the learner does not count)
    with pytest.raises(NoQuorum, match="1 of 2 voting members"):
        choose(NODES, [answers[0], down(2), answers[2]])


def test_a_corrupt_member_is_not_healthy():
    alarm = ((IDS[2], "CORRUPT"),)
    c = choose(NODES, [answer(1), answer(2, alarms=alarm), answer(3, index=10, applied=10)])
    states = {s.node.name: s.state for s in c.judgement.states}
    assert states["cp-2"] == "corrupt" and c.source.node != NODES[1]


def test_named_node_is_used_after_the_quorum_check_even_when_unhealthy():
    c = choose(NODES, [answer(1), down(2), answer(3)], node="10.0.2.10")
    assert c.quorum and c.source.node == NODES[1] and not c.source.healthy and "not answering" in c.reason
    c = choose(NODES, [answer(1), answer(2), answer(3)], node="10.0.1.10")
    assert c.source.state == "leader" and c.reason == "named with --node"
    c = choose(NODES, [answer(1), answer(2), answer(3)], node="10.9.9.9")
    assert c.source.state == "not in the stack"
    with pytest.raises(NoQuorum):  # the quorum check comes first
        choose(NODES, [answer(1), down(2), down(3)], node="10.0.1.10")


def test_one_node():
    node = [NODES[0]]
    c = choose(node, [NodeAnswer(NODES[0], (MEMBERS[0],), status(1))])
    assert c.quorum and c.source.node == NODES[0] and c.source.state == "leader"
    with pytest.raises(NoQuorum, match="0 of 1"):
        choose(node, [down(1)])


def test_member_lists_that_fail_but_statuses_that_agree_are_no_quorum():
    """A member list needs a leader confirmed by a quorum (require-leader, linearizable): a status naming a leader
    without any member list is not proof of one."""
    answers = [NodeAnswer(n, None, status(i + 1)) for i, n in enumerate(NODES)]
    with pytest.raises(NoQuorum):
        choose(NODES, answers)


def test_record_names_the_member_and_the_quorum():
    c = choose(NODES, [answer(1), down(2), answer(3)])
    assert c.record() == {"node": "cp-3", "ip": "10.0.3.10", "id": "c3", "quorum": "2/3"}
    # only IPs known (the Lambda): the member's own name from the member list
    by_ip = [ClusterNode(n.private_ip, n.private_ip, n.private_ip) for n in NODES]
    answers = [NodeAnswer(by_ip[i - 1], MEMBERS, status(i)) for i in (1, 2, 3)]
    assert choose(by_ip, answers).record()["node"] in ("cp-2", "cp-3")
    lines = c.lines()
    assert lines[0].startswith("etcd: 2 of 3 voting members healthy and following leader a1")
    assert lines[-1].startswith("snapshot from cp-3 (10.0.3.10), member c3: a follower")
    c = choose(NODES, [NodeAnswer(NODES[0], None, status(1, leader=0)), down(2), down(3)], allow_no_quorum=True)
    assert c.record()["quorum"] == "none" and c.lines()[0].startswith("etcd: NO quorum")


def test_status_line_per_member_health():
    """`talos-dr status` with several nodes: OK with every voter healthy, WARN with one lost (one more loss stops the
    cluster), FAIL without a quorum; one node: no such line at all."""
    from datetime import UTC, datetime, timedelta

    from dr.core import status as st

    ok = st.members_check(judge(NODES, [answer(1), answer(2), answer(3)]))
    assert ok.state == st.OK and ok.summary == "3 of 3 voting members healthy, following leader a1"
    warn = st.members_check(judge(NODES, [answer(1), down(2), answer(3)]))
    assert warn.state == st.WARN and "cp-2 (10.0.2.10): not answering" in warn.summary and "RUNBOOK" in warn.fix
    fail = st.members_check(judge(NODES, [answer(1), down(2), down(3)]))
    assert fail.state == st.FAIL and "NO quorum" in fail.summary and "talos-dr restore" in fail.fix
    facts = st.StatusFacts(interval=timedelta(hours=1))
    names = [c.name for c in st.evaluate(facts, datetime.now(UTC))]
    assert st.MEMBERS not in names and st.ETCD in names
    facts.members = judge(NODES, [answer(1), down(2), answer(3)])
    names = [c.name for c in st.evaluate(facts, datetime.now(UTC))]
    assert names.index(st.MEMBERS) == names.index(st.ETCD) - 1


def test_a_member_list_refused_for_another_reason_is_named_so():
    refused = NodeAnswer(NODES[1], None, status(2), "etcd member list from 10.0.2.10 refused: not authorized")
    j = judge(NODES, [answer(1), refused, answer(3)])
    assert {s.node.name: s.state for s in j.states}["cp-2"] == "member list failed" and j.has_quorum


def _order(c) -> list[str]:
    names = [c.source.node.name]
    while (c := c.after_failure("stream cut")) is not None:
        names.append(c.source.node.name)
    return names


def test_when_the_source_fails_the_next_member_of_the_majority_is_tried_then_none():
    # three healthy: the most-applied follower, the other follower, then the leader; never a fourth
    c = choose(NODES, [answer(1, index=1010), answer(2, index=1005), answer(3, index=1008)])
    assert _order(c) == ["cp-3", "cp-2", "cp-1"]
    nxt = c.after_failure("the node does not answer")
    assert nxt.quorum and nxt.judgement is c.judgement
    assert "cp-3 (10.0.3.10) failed: the node does not answer" in nxt.reason and "follower" in nxt.reason
    # followers too far behind come after the leader
    lead = 100_000
    c = choose(NODES, [answer(1, index=lead), answer(2, index=lead, applied=lead - MAX_LAG - 1),
                       answer(3, index=lead, applied=lead - MAX_LAG - 50)])
    assert _order(c) == ["cp-1", "cp-2", "cp-3"]
    assert "catching up" in c.after_failure("x").reason
    # a member that is down, corrupt, a learner or follows another leader is never tried
    alarm = ((IDS[2], "CORRUPT"),)
    assert _order(choose(NODES, [answer(1), answer(2, alarms=alarm), answer(3)])) == ["cp-3", "cp-1"]
    assert _order(choose(NODES, [answer(1), down(2), answer(3)])) == ["cp-3", "cp-1"]


def test_a_named_node_or_a_snapshot_without_quorum_has_no_fallback():
    assert choose(NODES, [answer(1), answer(2), answer(3)], node="10.0.1.10").after_failure("x") is None
    c = choose(NODES, [answer(1), down(2), down(3)], allow_no_quorum=True)
    assert not c.quorum and c.after_failure("x") is None
