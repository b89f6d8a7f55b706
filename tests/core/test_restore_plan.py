"""The restore's decisions as a table over the states a real Talos v1.13.9 node can be in (dr/core/node_state.py,
sandbox/CONFORMANCE.md): each row is node state x journal x options -> the next step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dr.core import journal as jn
from dr.core import node_state as s
from dr.core import restore_plan as pl

NOW = datetime(2026, 12, 1, 3, 0, 0, tzinfo=UTC)


def node(kind, stage="running", etcd=None, since=5.0, message=""):
    etcd = etcd or {s.ETCD_RUNNING: "Running", s.ETCD_PREPARING: "Preparing", s.ETCD_FAILED: "Failed",
                    s.ETCD_STOPPED: "Finished"}.get(kind)
    return s.NodeState(kind, stage, etcd, since, message)


RUNNING = node(s.ETCD_RUNNING)
PREPARING_BRIEF = node(s.ETCD_PREPARING, "booting", since=3)
PREPARING_LONG = node(s.ETCD_PREPARING, "booting", since=600)  # the join loop: waiting for a bootstrap
FAILED = node(s.ETCD_FAILED, "running", message="Failed to run pre stage: error recovering from the snapshot")
CRASHLOOP = node(s.ETCD_FAILED, "booting", etcd="Waiting", message="Error running Containerd(etcd), going to restart")
STOPPED = node(s.ETCD_STOPPED)
MAINT = s.NodeState(s.MAINTENANCE, "maintenance")
MOVING = s.NodeState(s.TRANSITIONING, "rebooting")
GONE = s.NodeState(s.UNREACHABLE, "unreachable")
REFUSING = s.NodeState(s.REFUSED, "unknown")


def journal(*steps, reset_ago=600.0):
    j = jn.Journal(spec="latest", snapshot_path="/s.db", snapshot_sha256="ab" * 32, snapshot_origin="s3://b/k",
                   node="10.0.1.5", cluster="c")
    for step in steps:
        at = NOW - timedelta(seconds=reset_ago) if step == jn.RESET else NOW
        j.steps[step] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return j


ASKED = pl.Options(confirmed=True)
ASKED_SAFE = pl.Options(confirmed=True, safety_done=True)
PAST_RESET = (jn.CONFIRMED, jn.SAFETY_SNAPSHOT, jn.RESET)
PAST_BOOT = (*PAST_RESET, jn.NODE_BACK, jn.BOOTSTRAP_STARTED)

TABLE = [
    # --- a fresh run (no journal): nothing changes before this run's own confirmation -------------------------
    ("healthy node", RUNNING, None, pl.Options(), pl.CONFIRM),
    ("confirmed, etcd runs: a safety snapshot first", RUNNING, None, ASKED, pl.SAFETY_SNAPSHOT),
    ("confirmed and snapshotted: reset", RUNNING, None, ASKED_SAFE, pl.RESET),
    ("--no-safety-snapshot", RUNNING, None, pl.Options(confirmed=True, no_safety_snapshot=True), pl.RESET),
    ("etcd corrupt, node running (refused recovery or crash)", FAILED, None, pl.Options(), pl.CONFIRM),
    ("etcd crash-looping at boot: no snapshot possible, reset", CRASHLOOP, None, ASKED, pl.RESET),
    ("etcd stopped", STOPPED, None, ASKED, pl.RESET),
    ("etcd in its brief pre-start on boot: wait, it may come up", PREPARING_BRIEF, None, pl.Options(), pl.WAIT),
    ("etcd waiting for bootstrap for long: empty, ask", PREPARING_LONG, None, pl.Options(), pl.CONFIRM),
    ("empty and confirmed: bootstrap, no reset", PREPARING_LONG, None, ASKED, pl.BOOTSTRAP),
    ("maintenance: ask", MAINT, None, pl.Options(), pl.CONFIRM),
    ("maintenance, confirmed: apply the config", MAINT, None, ASKED, pl.APPLY_CONFIG),
    ("node rebooting before we did anything: wait", MOVING, None, pl.Options(), pl.WAIT),
    ("node unreachable before we did anything: refuse", GONE, None, pl.Options(), pl.REFUSE),
    ("credentials refused: refuse", REFUSING, None, pl.Options(), pl.REFUSE),
    # --- a journal from a run that died before its reset: it never stands in for this run's confirmation -----
    ("confirmed in an earlier run only: ask again", RUNNING, journal(jn.CONFIRMED), pl.Options(), pl.CONFIRM),
    ("safety snapshot in an earlier run only: take a new one", RUNNING, journal(jn.CONFIRMED, jn.SAFETY_SNAPSHOT),
     ASKED, pl.SAFETY_SNAPSHOT),
    # --- past our reset ----------------------------------------------------------------------------------------
    ("after our reset the node reboots", MOVING, journal(*PAST_RESET), pl.Options(), pl.WAIT),
    ("after our reset it is gone for a while", GONE, journal(*PAST_RESET), pl.Options(), pl.WAIT),
    ("after our reset etcd waits (even briefly): bootstrap, no question", PREPARING_BRIEF, journal(*PAST_RESET),
     pl.Options(), pl.BOOTSTRAP),
    ("after our reset, maintenance (--wipe-state)", MAINT, journal(*PAST_RESET), pl.Options(), pl.APPLY_CONFIG),
    ("after our config apply etcd waits", PREPARING_BRIEF, journal(*PAST_RESET, jn.CONFIG_APPLIED), pl.Options(),
     pl.BOOTSTRAP),
    ("after our reset etcd fails: bootstrap anew (AlreadyExists if the reset never wiped it)", CRASHLOOP,
     journal(*PAST_RESET), pl.Options(), pl.BOOTSTRAP),
    ("reset recorded seconds ago, etcd still runs: give the reset time to begin", RUNNING,
     journal(*PAST_RESET, reset_ago=5), pl.Options(), pl.WAIT),
    ("reset recorded long ago, etcd runs with data: it never happened, start over", RUNNING,
     journal(*PAST_RESET, reset_ago=600), pl.Options(), pl.START_OVER),
    ("L2: a stale journal says reset, etcd merely stopped: never reset without asking", STOPPED,
     journal(*PAST_RESET), pl.Options(), pl.WAIT),
    # --- past our bootstrap: the node checks the snapshot now -------------------------------------------------
    ("bootstrap accepted, etcd starting", node(s.ETCD_PREPARING, "running", since=1), journal(*PAST_BOOT),
     pl.Options(), pl.WAIT),
    ("bootstrap accepted, the runner restarting", MOVING, journal(*PAST_BOOT), pl.Options(), pl.WAIT),
    ("etcd runs from the snapshot: health", RUNNING, journal(*PAST_BOOT), pl.Options(), pl.HEALTH),
    ("F2: etcd failed after our bootstrap: bootstrap again once (an image pull fails before the snapshot is read)",
     FAILED, journal(*PAST_BOOT), pl.Options(), pl.BOOTSTRAP),
    ("etcd failed again after this run's retry: the node refused the snapshot", FAILED, journal(*PAST_BOOT),
     pl.Options(failed_retried=True), pl.RECOVERY_FAILED),
    ("still in the join loop long after our bootstrap: it never reached the node", PREPARING_LONG,
     journal(*PAST_BOOT), pl.Options(), pl.BOOTSTRAP),
    ("healthy recorded: the kubeconfig", RUNNING, journal(*PAST_BOOT, jn.BOOTSTRAPPED, jn.HEALTHY), pl.Options(),
     pl.KUBECONFIG),
    ("all done", RUNNING, journal(*PAST_BOOT, jn.BOOTSTRAPPED, jn.HEALTHY, jn.KUBECONFIG), pl.Options(), pl.DONE),
    # --- --abandon-previous of a restore past its reset: the node may be mid-reset ----------------------------
    ("abandoned past reset: wait for the node", GONE, None, pl.Options(abandoned_past_reset=True), pl.WAIT),
    ("abandoned past reset: etcd waits, even briefly: empty", PREPARING_BRIEF, None,
     pl.Options(abandoned_past_reset=True), pl.CONFIRM),
]


@pytest.mark.parametrize("why, st, j, opts, action", TABLE, ids=[row[0] for row in TABLE])
def test_plan(why, st, j, opts, action):
    step = pl.plan(st, j, opts, NOW)
    assert step.action == action, (why, step)


def test_the_question_says_whether_a_reset_and_a_safety_snapshot_follow():
    assert pl.plan(RUNNING, None, pl.Options(), NOW) == pl.Step(pl.CONFIRM, pl.plan(RUNNING, None, pl.Options(),
                                                                                    NOW).why, needs_reset=True,
                                                                  safety=True)
    assert pl.plan(FAILED, None, pl.Options(), NOW).safety is False  # etcd does not run: nothing to snapshot
    assert pl.plan(RUNNING, None, pl.Options(no_safety_snapshot=True), NOW).safety is False
    assert pl.plan(PREPARING_LONG, None, pl.Options(), NOW).needs_reset is False
    assert pl.plan(MAINT, None, pl.Options(), NOW).needs_reset is False


def test_waits_say_which_timeout_applies():
    assert pl.plan(MOVING, journal(*PAST_RESET), pl.Options(), NOW).phase == pl.REBOOT
    assert pl.plan(PREPARING_BRIEF, None, pl.Options(), NOW).phase == pl.SETTLE
    assert pl.plan(RUNNING, journal(*PAST_RESET, reset_ago=5), pl.Options(), NOW).phase == pl.RESET_BEGIN
    assert pl.plan(MOVING, journal(*PAST_BOOT), pl.Options(), NOW).phase == pl.RECOVERY


def test_no_reset_ever_without_this_runs_confirmation():
    """Whatever the journal says, RESET comes only with confirmed=True: a journal on disk must not wipe a node nobody confirmed."""
    states = [RUNNING, PREPARING_BRIEF, PREPARING_LONG, FAILED, CRASHLOOP, STOPPED, MAINT, MOVING, GONE, REFUSING]
    journals = [None, journal(jn.CONFIRMED), journal(jn.CONFIRMED, jn.SAFETY_SNAPSHOT), journal(*PAST_RESET),
                journal(*PAST_RESET, reset_ago=5), journal(*PAST_BOOT)]
    for st in states:
        for j in journals:
            for opts in (pl.Options(), pl.Options(safety_done=True), pl.Options(abandoned_past_reset=True)):
                assert pl.plan(st, j, opts, NOW).action != pl.RESET, (st, j and j.steps, opts)
