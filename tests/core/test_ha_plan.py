"""dr.core.ha_plan as a table: what is broken on three control-plane nodes, and the restore's next step for every
state a node can be in, including resume after each step and the one property that matters most: once the journal
names a bootstrap node, no other node is ever bootstrapped."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from dr.core import ha_plan as ha
from dr.core import journal as jn
from dr.core.cluster_nodes import ClusterNode
from dr.core.node_state import (
    ETCD_FAILED,
    ETCD_PREPARING,
    ETCD_RUNNING,
    ETCD_STOPPED,
    MAINTENANCE,
    REFUSED,
    TRANSITIONING,
    UNREACHABLE,
    NodeState,
)
from dr.core.timefmt import iso_utc

NOW = datetime(2026, 12, 7, 1, 0, 0, tzinfo=UTC)
N = [ClusterNode(f"cp-{i}", f"10.0.{i}.5", f"203.0.113.{i}", f"i-{i}", f"eu-west-1{'abc'[i - 1]}") for i in (1, 2, 3)]
IP1, IP2, IP3 = (n.private_ip for n in N)
LONG = 120.0


def member(i: int, learner: bool = False) -> ha.Member:
    n = N[i - 1]
    return ha.Member(id=f"{i:016x}", hostname=n.name, peer_urls=(f"https://{n.private_ip}:2380",),
                     client_urls=(f"https://{n.private_ip}:2379",), is_learner=learner)


ALL3 = (member(1), member(2), member(3))


def st(kind: str, since: float | None = None, msg: str = "") -> NodeState:
    etcd = {ETCD_RUNNING: "Running", ETCD_PREPARING: "Preparing", ETCD_FAILED: "Failed", ETCD_STOPPED: "Finished"}
    stage = {UNREACHABLE: "unreachable", MAINTENANCE: "maintenance", TRANSITIONING: "rebooting"}.get(kind, "running")
    return NodeState(kind, stage, etcd.get(kind), since, msg)


def v(i: int, kind: str, members=None, since: float | None = None, mtype: str | None = "controlplane",
      msg: str = "") -> ha.NodeView:
    if kind in (UNREACHABLE, MAINTENANCE, REFUSED):
        mtype = None
    return ha.NodeView(N[i - 1], st(kind, since, msg), mtype, tuple(members) if members is not None else None)


def j_(steps: dict[str, str] | None = None, target: str | None = None) -> jn.Journal:
    return jn.Journal(spec="s3://b/k", snapshot_path="/x", snapshot_sha256="ab", snapshot_origin="s3://b/k",
                      node=IP1, cluster="c", steps=dict(steps or {}), bootstrap_target=target)


def ago(seconds: float) -> str:
    return iso_utc(NOW - timedelta(seconds=seconds))


def plan(views, j=None, **o) -> ha.Step:
    return ha.plan(views, j, ha.Options(**o), NOW)


# --- classify ---------------------------------------------------------------------------------------------------

def test_healthy_all_three_voters():
    h = ha.classify([v(1, ETCD_RUNNING, ALL3), v(2, ETCD_RUNNING, ALL3), v(3, ETCD_RUNNING, ALL3)])
    assert (h.kind, h.voters, h.needed, h.lost) == (ha.HEALTHY, 3, 2, ())


def test_one_lost_is_quorum_intact():
    h = ha.classify([v(1, ETCD_RUNNING, ALL3), v(2, ETCD_RUNNING, ALL3), v(3, UNREACHABLE)])
    assert (h.kind, h.serving, h.lost) == (ha.QUORUM_INTACT, ("cp-1", "cp-2"), ("cp-3",))


def test_a_learner_is_not_healthy_yet():
    ms = (member(1), member(2), member(3, learner=True))
    h = ha.classify([v(1, ETCD_RUNNING, ms), v(2, ETCD_RUNNING, ms), v(3, ETCD_RUNNING, ms)])
    assert h.kind == ha.QUORUM_INTACT and h.lost == ("cp-3",)


@pytest.mark.parametrize("views", [
    [v(1, ETCD_RUNNING, None), v(2, UNREACHABLE), v(3, UNREACHABLE)],  # its member list needs a leader
    [v(1, ETCD_RUNNING, None), v(2, ETCD_PREPARING, since=LONG), v(3, ETCD_PREPARING, since=LONG)],  # replaced
    [v(1, UNREACHABLE), v(2, UNREACHABLE), v(3, UNREACHABLE)],
    [v(1, ETCD_FAILED), v(2, ETCD_FAILED), v(3, ETCD_RUNNING, None)],
])
def test_quorum_lost(views):
    assert ha.classify(views).kind == ha.QUORUM_LOST


def test_a_member_list_that_answers_proves_a_leader_even_with_two_talos_apis_silent():
    """Talos asks the member list with require-leader: node 1's answer means nodes 2 and 3's etcd still run (only
    their Talos API is unreachable from here). No restore."""
    views = [v(1, ETCD_RUNNING, ALL3), v(2, UNREACHABLE), v(3, UNREACHABLE)]
    h = ha.classify(views)
    assert (h.kind, h.lost) == (ha.QUORUM_INTACT, ("cp-2", "cp-3"))
    assert plan(views).action == ha.REFUSE_QUORUM_INTACT


def test_a_reset_node_that_joined_a_cluster_with_a_leader_stops_the_restore():
    j = j_({jn.CONFIRMED: ago(90), jn.on(jn.RESET, IP1): ago(80)})
    views = [v(1, ETCD_RUNNING, ALL3), v(2, UNREACHABLE), v(3, UNREACHABLE)]
    s = plan(views, j, confirmed=frozenset({IP1}), safety_done=True)
    assert (s.action, s.node) == (ha.REFUSE_QUORUM_INTACT, IP1)


def test_member_lists_that_do_not_answer_never_read_as_lost():
    h = ha.classify([v(1, ETCD_RUNNING, None), v(2, ETCD_RUNNING, None), v(3, UNREACHABLE)])
    assert h.kind == ha.UNKNOWN
    assert plan([v(1, ETCD_RUNNING, None), v(2, ETCD_RUNNING, None), v(3, UNREACHABLE)]).action == ha.WAIT


def test_member_matched_by_private_ip_then_hostname():
    by_name = ha.Member(id="1", hostname="cp-2", peer_urls=("https://192.0.2.9:2380",))
    assert ha.member_of(N[1], [by_name]) is by_name
    assert ha.member_of(N[0], [by_name]) is None
    assert ha.member_of(N[0], [member(1)]) == member(1)


def test_choose_target_is_the_bootstrap_node_first_else_the_first_up():
    assert ha.choose_target([v(1, ETCD_PREPARING), v(2, ETCD_PREPARING), v(3, ETCD_PREPARING)]).ip == IP1
    assert ha.choose_target([v(1, UNREACHABLE), v(2, ETCD_PREPARING), v(3, ETCD_PREPARING)]).ip == IP2
    assert ha.choose_target([v(1, UNREACHABLE), v(2, UNREACHABLE), v(3, ETCD_PREPARING)]).ip == IP3
    assert ha.choose_target([v(1, UNREACHABLE), v(2, ETCD_RUNNING), v(3, UNREACHABLE)]) is None


# --- before anything changed --------------------------------------------------------------------------------------

def test_healthy_cluster_is_refused_without_rollback():
    views = [v(1, ETCD_RUNNING, ALL3), v(2, ETCD_RUNNING, ALL3), v(3, ETCD_RUNNING, ALL3)]
    assert plan(views).action == ha.REFUSE_QUORUM_INTACT
    s = plan(views, rollback=True)
    assert (s.action, s.rollback, s.needs_reset, s.safety) == (ha.CONFIRM, True, (IP1, IP2, IP3), True)


def test_one_member_lost_is_refused_no_snapshot_restore():
    views = [v(1, ETCD_RUNNING, ALL3), v(2, UNREACHABLE), v(3, ETCD_RUNNING, ALL3)]
    s = plan(views)
    assert s.action == ha.REFUSE_QUORUM_INTACT and s.why == ha.QUORUM_INTACT
    assert plan(views, rollback=True).action == ha.CONFIRM


def test_init_node_refused_before_touching_anything():
    views = [v(1, ETCD_RUNNING, None, mtype="init"), v(2, UNREACHABLE), v(3, UNREACHABLE)]
    s = plan(views)
    assert (s.action, s.node) == (ha.REFUSE_INIT, IP1)
    assert plan(views, confirmed=frozenset({IP1}), safety_done=True).action == ha.REFUSE_INIT
    s = plan([v(1, ETCD_RUNNING, None), v(2, ETCD_RUNNING, None, mtype="worker"), v(3, UNREACHABLE)])
    assert (s.action, s.node) == (ha.REFUSE_INIT, IP2) and "worker" in s.why


def test_nothing_answers_or_credentials_refused():
    assert plan([v(1, UNREACHABLE), v(2, UNREACHABLE), v(3, UNREACHABLE)]).action == ha.REFUSE
    s = plan([v(1, REFUSED), v(2, ETCD_RUNNING, None), v(3, UNREACHABLE)])
    assert (s.action, s.node) == (ha.REFUSE, IP1)


def test_settling_nodes_are_waited_for_first():
    s = plan([v(1, ETCD_RUNNING, None), v(2, TRANSITIONING), v(3, UNREACHABLE)])
    assert (s.action, s.phase, s.node) == (ha.WAIT, ha.SETTLE, IP2)
    s = plan([v(1, ETCD_RUNNING, None), v(2, ETCD_PREPARING, since=3), v(3, UNREACHABLE)])
    assert (s.action, s.node) == (ha.WAIT, IP2)  # brief Preparing on boot is not "empty"


def test_quorum_lost_two_down_confirm_safety_reset():
    views = [v(1, ETCD_RUNNING, None), v(2, UNREACHABLE), v(3, UNREACHABLE)]
    s = plan(views)
    assert (s.action, s.needs_reset, s.safety, s.rollback) == (ha.CONFIRM, (IP1,), True, False)
    s = plan(views, j_({jn.CONFIRMED: ago(1)}), confirmed=frozenset({IP1}))
    assert (s.action, s.node) == (ha.SAFETY_SNAPSHOT, IP1)
    s = plan(views, j_({jn.CONFIRMED: ago(1)}), confirmed=frozenset({IP1}), safety_done=True)
    assert (s.action, s.node) == (ha.RESET, IP1)
    s = plan(views, j_({jn.CONFIRMED: ago(1)}), confirmed=frozenset({IP1}), no_safety_snapshot=True)
    assert (s.action, s.node) == (ha.RESET, IP1)


def test_every_node_that_holds_data_is_reset_one_after_the_other():
    views = [v(1, ETCD_FAILED), v(2, ETCD_RUNNING, None), v(3, UNREACHABLE)]
    o = dict(confirmed=frozenset({IP1, IP2}), safety_done=True)
    assert plan(views, j_({jn.CONFIRMED: ago(5)}), **o).node == IP1
    j = j_({jn.CONFIRMED: ago(5), jn.on(jn.RESET, IP1): ago(100)})
    views = [v(1, ETCD_PREPARING, since=5), v(2, ETCD_RUNNING, None), v(3, UNREACHABLE)]
    assert (plan(views, j, **o).action, plan(views, j, **o).node) == (ha.RESET, IP2)


def test_replaced_empty_nodes_are_not_reset_and_the_bootstrap_node_is_chosen():
    views = [v(1, ETCD_RUNNING, None), v(2, ETCD_PREPARING, since=LONG), v(3, ETCD_PREPARING, since=LONG)]
    assert plan(views).needs_reset == (IP1,)
    j = j_({jn.CONFIRMED: ago(30), jn.SAFETY_SNAPSHOT: ago(20), jn.on(jn.RESET, IP1): ago(10)})
    views = [v(1, ETCD_PREPARING, since=2), v(2, ETCD_PREPARING, since=LONG), v(3, ETCD_PREPARING, since=LONG)]
    s = plan(views, j)  # a resume in another run: the reset is proved by the state, no new confirmation
    assert (s.action, s.node) == (ha.CHOOSE_TARGET, IP1)


def test_bootstrap_node_down_the_first_up_is_chosen():
    j = j_({jn.CONFIRMED: ago(30), jn.on(jn.RESET, IP2): ago(10)})
    views = [v(1, UNREACHABLE), v(2, ETCD_PREPARING, since=1), v(3, UNREACHABLE)]
    assert (plan(views, j).action, plan(views, j).node) == (ha.CHOOSE_TARGET, IP2)


def test_all_empty_and_untouched_asks_first_then_chooses():
    views = [v(1, ETCD_PREPARING, since=LONG), v(2, ETCD_PREPARING, since=LONG), v(3, UNREACHABLE)]
    s = plan(views)
    assert (s.action, s.needs_reset) == (ha.CONFIRM, ())
    s = plan(views, j_({jn.CONFIRMED: ago(1)}), confirmed=frozenset({IP1, IP2}))
    assert (s.action, s.node) == (ha.CHOOSE_TARGET, IP1)


# --- resume at each step ------------------------------------------------------------------------------------------

def test_resume_after_reset_waits_for_the_reboot():
    j = j_({jn.CONFIRMED: ago(30), jn.on(jn.RESET, IP1): ago(10)})
    for kind in (UNREACHABLE, TRANSITIONING, ETCD_STOPPED):
        s = plan([v(1, kind), v(2, UNREACHABLE), v(3, UNREACHABLE)], j)
        assert (s.action, s.phase, s.node) == (ha.WAIT, ha.REBOOT, IP1), kind


def test_recorded_reset_not_yet_begun_then_started_over():
    j = j_({jn.CONFIRMED: ago(30), jn.on(jn.RESET, IP1): ago(5)})
    views = [v(1, ETCD_RUNNING, None), v(2, UNREACHABLE), v(3, UNREACHABLE)]
    assert plan(views, j).phase == ha.RESET_BEGIN
    j.steps[jn.on(jn.RESET, IP1)] = ago(600)
    s = plan(views, j)
    assert (s.action, s.node) == (ha.START_OVER, IP1)


def test_a_node_that_came_back_with_data_needs_a_new_confirmation():
    j = j_({jn.CONFIRMED: ago(60), jn.on(jn.RESET, IP1): ago(50)})
    views = [v(1, ETCD_PREPARING, since=40), v(2, ETCD_RUNNING, None), v(3, UNREACHABLE)]
    s = plan(views, j, confirmed=frozenset({IP1}), safety_done=True)
    assert (s.action, s.needs_reset) == (ha.CONFIRM, (IP2,))
    s = plan(views, j, confirmed=frozenset({IP1, IP2}), safety_done=True)
    assert (s.action, s.node) == (ha.RESET, IP2)


def test_target_recorded_bootstrap_not_sent_resume_bootstraps_that_node():
    j = j_({jn.CONFIRMED: ago(60), jn.on(jn.RESET, IP1): ago(50), jn.BOOTSTRAP_TARGET: ago(1)}, target=IP1)
    views = [v(1, ETCD_PREPARING, since=30), v(2, ETCD_PREPARING, since=LONG), v(3, UNREACHABLE)]
    s = plan(views, j)
    assert (s.action, s.node) == (ha.BOOTSTRAP, IP1)


def test_target_recorded_and_unreachable_waits_never_another():
    j = j_({jn.on(jn.RESET, IP1): ago(50), jn.BOOTSTRAP_TARGET: ago(1)}, target=IP1)
    views = [v(1, UNREACHABLE), v(2, ETCD_PREPARING, since=LONG), v(3, ETCD_PREPARING, since=LONG)]
    s = plan(views, j)
    assert (s.action, s.node, s.phase) == (ha.WAIT, IP1, ha.REBOOT)
    j.steps[jn.BOOTSTRAP_STARTED] = ago(1)
    s = plan(views, j)
    assert (s.action, s.node, s.phase) == (ha.WAIT, IP1, ha.RECOVERY)


def test_no_bootstrap_while_another_node_runs_or_holds_data():
    j = j_({jn.on(jn.RESET, IP1): ago(50), jn.BOOTSTRAP_TARGET: ago(1)}, target=IP1)
    for other in (ETCD_RUNNING, ETCD_FAILED, ETCD_STOPPED):
        s = plan([v(1, ETCD_PREPARING, since=5), v(2, other, None), v(3, UNREACHABLE)], j)
        assert (s.action, s.others) == (ha.REFUSE_SPLIT, (IP2,)), other


def test_target_running_although_never_bootstrapped_is_refused():
    j = j_({jn.on(jn.RESET, IP1): ago(50), jn.BOOTSTRAP_TARGET: ago(1)}, target=IP1)
    s = plan([v(1, ETCD_RUNNING, ALL3), v(2, ETCD_PREPARING, since=LONG), v(3, UNREACHABLE)], j)
    assert s.action == ha.REFUSE_SPLIT


def test_after_bootstrap_sent_waits_then_resends_only_to_the_target():
    j = j_({jn.on(jn.RESET, IP1): ago(90), jn.BOOTSTRAP_TARGET: ago(80), jn.BOOTSTRAP_STARTED: ago(80)}, target=IP1)
    views = [v(1, ETCD_PREPARING, since=5), v(2, ETCD_PREPARING, since=LONG), v(3, UNREACHABLE)]
    assert plan(views, j).phase == ha.RECOVERY
    views = [v(1, ETCD_PREPARING, since=LONG), v(2, ETCD_PREPARING, since=LONG), v(3, UNREACHABLE)]
    s = plan(views, j)
    assert (s.action, s.node) == (ha.BOOTSTRAP, IP1)
    assert plan(views, j, resent=True).action == ha.WAIT  # once per run


def test_recovery_failed_and_recovered():
    j = j_({jn.on(jn.RESET, IP1): ago(90), jn.BOOTSTRAP_TARGET: ago(80), jn.BOOTSTRAP_STARTED: ago(80)}, target=IP1)
    s = plan([v(1, ETCD_FAILED, msg="bad hash"), v(2, ETCD_PREPARING, since=LONG), v(3, UNREACHABLE)], j)
    assert (s.action, s.why) == (ha.RECOVERY_FAILED, "bad hash")
    s = plan([v(1, ETCD_RUNNING, (member(1),)), v(2, ETCD_PREPARING, since=LONG), v(3, UNREACHABLE)], j)
    assert (s.action, s.node) == (ha.RECOVERED, IP1)


def test_joins_are_watched_until_every_node_that_is_up_votes():
    steps = {jn.on(jn.RESET, IP1): ago(90), jn.BOOTSTRAP_TARGET: ago(80), jn.BOOTSTRAP_STARTED: ago(80),
             jn.BOOTSTRAPPED: ago(60)}
    j = j_(steps, target=IP1)
    s = plan([v(1, ETCD_RUNNING, (member(1),)), v(2, ETCD_PREPARING, since=LONG), v(3, UNREACHABLE)], j)
    assert (s.action, s.node, s.phase) == (ha.WAIT, IP2, ha.JOIN)
    learning = (member(1), member(2, learner=True))
    s = plan([v(1, ETCD_RUNNING, learning), v(2, ETCD_RUNNING, learning), v(3, UNREACHABLE)], j)
    assert (s.action, s.node) == (ha.WAIT, IP2)
    both = (member(1), member(2))
    s = plan([v(1, ETCD_RUNNING, both), v(2, ETCD_RUNNING, both), v(3, UNREACHABLE)], j)
    assert (s.action, s.node) == (ha.JOINED, IP2)
    j.steps[jn.on(jn.JOINED, IP2)] = ago(1)
    assert plan([v(1, ETCD_RUNNING, both), v(2, ETCD_RUNNING, both), v(3, UNREACHABLE)], j).action == ha.HEALTH
    # A node that came back with old data of its own is not waited for (the end says to wipe it).
    assert plan([v(1, ETCD_RUNNING, both), v(2, ETCD_RUNNING, both), v(3, ETCD_RUNNING, ALL3)], j).action == ha.HEALTH
    assert plan([v(1, ETCD_RUNNING, None), v(2, ETCD_RUNNING, both), v(3, UNREACHABLE)], j).phase == ha.JOIN


def test_after_health_kubeconfig_then_done():
    j = j_({jn.HEALTHY: ago(1)}, target=IP1)
    views = [v(1, UNREACHABLE), v(2, UNREACHABLE), v(3, UNREACHABLE)]
    assert plan(views, j).action == ha.KUBECONFIG
    j.steps[jn.KUBECONFIG] = ago(0)
    assert plan(views, j).action == ha.DONE


def test_strays_are_the_nodes_outside_the_restored_cluster():
    both = (member(1), member(2))
    views = [v(1, ETCD_RUNNING, both), v(2, ETCD_RUNNING, both), v(3, UNREACHABLE)]
    assert [s.ip for s in ha.strays(views, IP1)] == [IP3]
    views[2] = v(3, ETCD_RUNNING, ALL3)
    assert [s.ip for s in ha.strays(views, IP1)] == [IP3]


# --- a second bootstrap is impossible -----------------------------------------------------------------------------

KINDS = (ETCD_RUNNING, ETCD_PREPARING, ETCD_FAILED, ETCD_STOPPED, MAINTENANCE, TRANSITIONING, UNREACHABLE, REFUSED)


@pytest.mark.parametrize("target", [IP1, IP2, IP3])
def test_once_a_target_is_recorded_no_other_node_is_ever_bootstrapped(target):
    """Every combination of node states, member lists, journal progress and options: the plan bootstraps the
    recorded node or nobody, and never chooses a target again."""
    progress = [
        {jn.BOOTSTRAP_TARGET: ago(1)},
        {jn.BOOTSTRAP_TARGET: ago(200), jn.BOOTSTRAP_STARTED: ago(200)},
        {jn.BOOTSTRAP_TARGET: ago(200), jn.BOOTSTRAP_STARTED: ago(200), jn.BOOTSTRAPPED: ago(100)},
    ]
    seen = set()
    for kinds in itertools.product(KINDS, repeat=3):
        for lists in (None, ALL3, (member(1),)):
            views = [v(i + 1, k, lists if k == ETCD_RUNNING else None, since=LONG) for i, k in enumerate(kinds)]
            for steps in progress:
                for opts in ({}, {"confirmed": frozenset({IP1, IP2, IP3}), "safety_done": True}, {"resent": True}):
                    j = j_({jn.CONFIRMED: ago(300), **{jn.on(jn.RESET, ip): ago(250) for ip in (IP1, IP2, IP3)},
                            **steps}, target=target)
                    s = plan(views, j, **opts)
                    seen.add(s.action)
                    assert s.action != ha.CHOOSE_TARGET, (kinds, steps)
                    if s.action == ha.BOOTSTRAP:
                        assert s.node == target, (kinds, steps, s)
                        others = [x for x in views if x.ip != target]
                        assert not any(x.holds_data for x in others), (kinds, steps)
                        assert next(x for x in views if x.ip == target).kind == ETCD_PREPARING
    assert ha.BOOTSTRAP in seen and ha.REFUSE_SPLIT in seen and ha.WAIT in seen


def test_a_fresh_run_never_bootstraps_without_choosing_and_recording_first():
    for kinds in itertools.product(KINDS, repeat=3):
        views = [v(i + 1, k, ALL3 if k == ETCD_RUNNING else None, since=LONG) for i, k in enumerate(kinds)]
        for j in (None, j_({jn.CONFIRMED: ago(9), jn.on(jn.RESET, IP1): ago(8)})):
            s = plan(views, j, confirmed=frozenset({IP1, IP2, IP3}), safety_done=True, rollback=True)
            assert s.action != ha.BOOTSTRAP, kinds


# --- the journal's per-node steps ---------------------------------------------------------------------------------

def test_journal_per_node_steps():
    j = j_()
    assert not j.past_point_of_no_return and j.last_step is None
    j.steps[jn.CONFIRMED] = ago(10)
    j.steps[jn.on(jn.RESET, IP2)] = ago(5)
    assert j.past_point_of_no_return and j.done_on(jn.RESET, IP2) and not j.done_on(jn.RESET, IP1)
    assert j.last_step == f"reset@{IP2}"
    j2 = j_(target=IP1)
    assert j2.past_point_of_no_return
    j.bootstrap_target = IP2
    j.steps[jn.BOOTSTRAP_TARGET] = ago(5)  # same second as the reset: the order breaks the tie
    assert j.last_step == jn.BOOTSTRAP_TARGET
    back = jn.parse(jn.dumps(j), origin=__import__("pathlib").Path("/j"))
    assert back.bootstrap_target == IP2 and back.steps == j.steps


def test_only_abandoning_the_journal_lets_another_node_be_chosen():
    """The recorded target is gone for good (say, its instance terminated and nobody rebuilt it): with the journal
    the restore only waits for it; `--abandon-previous` drops the journal, asks again, and only then chooses the
    first node up."""
    views = [v(1, UNREACHABLE), v(2, ETCD_PREPARING, since=5), v(3, ETCD_PREPARING, since=5)]
    j = j_({jn.on(jn.RESET, IP2): ago(90), jn.on(jn.RESET, IP3): ago(90), jn.BOOTSTRAP_TARGET: ago(80)}, target=IP1)
    assert (plan(views, j).action, plan(views, j).node) == (ha.WAIT, IP1)
    s = plan(views, None, abandoned_past_reset=True)
    assert (s.action, s.needs_reset) == (ha.CONFIRM, ())
    s = plan(views, j_({jn.CONFIRMED: ago(1)}), abandoned_past_reset=True, confirmed=frozenset({IP2, IP3}))
    assert (s.action, s.node) == (ha.CHOOSE_TARGET, IP2)
