"""The restore's decisions: a pure function of the node's state, the journal and the options, tested as a table.

``plan(node, journal, options, now)`` says what to do next; ``dr.commands.restore.command`` does it, probes the node again
and asks again, until the plan says ``DONE`` or an error. Nothing here does I/O or reads the clock.

The rules that keep data safe:

* Nothing destroys before this run's own confirmation: a journal from an earlier run never stands in for it (a stale
  or edited journal could otherwise reset a node nobody agreed to reset). The only steps taken without asking are
  the ones after a reset the node's state proves: etcd in its pre-start waiting for a bootstrap, maintenance mode,
  or etcd running or failing after this restore's own bootstrap.
* A safety snapshot is taken in this run, after the confirmation, whenever etcd runs and a reset follows.
* "Waiting for bootstrap" is etcd ``Preparing``: for as long as it likes after this restore's own reset or config
  apply (its data was wiped), otherwise only after ``preparing_long`` seconds (it is brief on every boot).
* After ``bootstrap --recover-from`` returns, the node checks the snapshot in etcd's pre-start: etcd ``Failed``
  then is never success. It is not always the snapshot, though: etcd's pre-start pulls its image first (after an
  EPHEMERAL reset the image is gone; talos v1.13.9 internal/app/machined/pkg/system/services/etcd.go:106-115, before
  the recovery at :511-515), and a failed pull is terminal too ("Failed to run pre stage: failed to pull image ...",
  service_runner.go:273-279, system.go:194-200) while the data directory is still empty. So the first ``Failed``
  after our bootstrap is answered by bootstrapping again (``failed_retried``): a node that read the snapshot has a
  non-empty data directory and refuses that with AlreadyExists, which is the real refusal (``RECOVERY_FAILED``,
  decided by the command); any other answer means the retry was right.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from dr.core import journal as jn
from dr.core.journal import Journal
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
from dr.core.timefmt import ISO_UTC_FORMAT

# Actions.
REFUSE = "refuse"  # stop before anything changed (node unreachable or refusing us)
WAIT = "wait"  # poll the node again (``phase`` names what for, and which timeout applies)
CONFIRM = "confirm"  # show what will be lost and ask for yes
SAFETY_SNAPSHOT = "safety_snapshot"
RESET = "reset"
APPLY_CONFIG = "apply_config"
BOOTSTRAP = "bootstrap"
START_OVER = "start_over"  # our recorded reset never happened: forget it and ask again
RECOVERY_FAILED = "recovery_failed"  # etcd failed after our bootstrap: the node refused the snapshot
HEALTH = "health"
KUBECONFIG = "kubeconfig"
DONE = "done"

# Wait phases (each has its own timeout in the command).
SETTLE = "settle"  # before anything changed, or after an abandoned restore
REBOOT = "reboot"  # after our reset or config apply
RESET_BEGIN = "reset_begin"  # our reset was recorded, etcd still runs: has the reset begun?
RECOVERY = "recovery"  # after our bootstrap, until etcd runs
RETRY_AFTER_FAILED = "retry_after_failed"  # for BOOTSTRAP: etcd Failed after our bootstrap; AlreadyExists = refused

RESET_BEGIN_GRACE = 60.0  # seconds a recorded reset may take to show on the node before we call it lost


@dataclass(frozen=True)
class Options:
    wipe_state: bool = False
    no_safety_snapshot: bool = False
    confirmed: bool = False  # confirmed in THIS run
    safety_done: bool = False  # safety snapshot attempted in THIS run (a failure is a warning)
    abandoned_past_reset: bool = False  # --abandon-previous dropped a journal past its reset
    preparing_long: float = 30.0  # seconds of Preparing that mean "waiting for bootstrap" without our own reset
    failed_retried: bool = False  # THIS run already bootstrapped again after etcd Failed following our bootstrap


@dataclass(frozen=True)
class Step:
    action: str
    why: str = ""
    phase: str | None = None  # for WAIT
    needs_reset: bool = False  # for CONFIRM
    safety: bool = False  # for CONFIRM


def _age(stamp: str | None, now: datetime) -> float | None:
    if not stamp:
        return None
    try:
        then = datetime.strptime(stamp, ISO_UTC_FORMAT).replace(tzinfo=now.tzinfo)
    except ValueError:
        return None
    return (now - then).total_seconds()


def plan(node: NodeState, j: Journal | None, o: Options, now: datetime) -> Step:
    """The next step. See the module docstring for the rules; tests/core/test_restore_plan.py is the table."""
    done = j.done if j is not None else (lambda _step: False)
    if done(jn.HEALTHY):
        return Step(KUBECONFIG if not done(jn.KUBECONFIG) else DONE)
    touched = bool(j and j.past_point_of_no_return) or o.abandoned_past_reset  # this restore changed the node

    if node.kind == REFUSED:
        return Step(REFUSE, "the node refuses our credentials")
    if node.kind == UNREACHABLE:
        if not touched:
            return Step(REFUSE, "the node does not answer")
        if done(jn.BOOTSTRAP_STARTED):
            return Step(WAIT, "to come back", phase=RECOVERY)
        why = "to settle after the abandoned restore's reset" if j is None else "to come back after the reset"
        return Step(WAIT, why, phase=REBOOT)
    if node.kind == TRANSITIONING:
        if done(jn.BOOTSTRAP_STARTED):
            return Step(WAIT, "for etcd to start from the snapshot", phase=RECOVERY)
        if not touched:
            return Step(WAIT, "to settle", phase=SETTLE)
        why = "to settle after the abandoned restore's reset" if j is None else "to come back after the reset"
        return Step(WAIT, why, phase=REBOOT)

    if done(jn.BOOTSTRAP_STARTED):
        return _after_bootstrap(node, j, o)
    if j is not None and j.past_point_of_no_return:
        return _after_reset(node, j, o, now)
    return _before_reset(node, o)


def _after_bootstrap(node: NodeState, j: Journal | None, o: Options) -> Step:
    assert j is not None
    if node.kind == ETCD_RUNNING:
        return Step(HEALTH, "etcd runs from the snapshot")
    if node.kind == ETCD_FAILED:
        if not o.failed_retried:
            return Step(BOOTSTRAP, node.etcd_message or "etcd failed", phase=RETRY_AFTER_FAILED)
        return Step(RECOVERY_FAILED, node.etcd_message or "etcd failed")
    if node.kind == MAINTENANCE:  # wiped again since (someone reset it with STATE): configure and bootstrap anew
        return Step(APPLY_CONFIG, "the node lost its config after the bootstrap")
    if node.kind == ETCD_PREPARING and not j.done(jn.BOOTSTRAPPED) and (node.etcd_since or 0) >= o.preparing_long:
        # Still in its join loop long after our bootstrap: the request never reached the node (we were stopped
        # while sending it). Bootstrapping again is safe: etcd's data directory is empty.
        return Step(BOOTSTRAP, "the earlier bootstrap never reached the node")
    return Step(WAIT, "for etcd to start from the snapshot", phase=RECOVERY)


def _after_reset(node: NodeState, j: Journal, o: Options, now: datetime) -> Step:
    if node.kind == MAINTENANCE:
        return Step(APPLY_CONFIG, "the node came back without its config")
    if node.kind in (ETCD_PREPARING, ETCD_FAILED):
        # Our reset wiped etcd's data: Preparing is its join loop; a failing etcd is bootstrapped anew (a data
        # directory that was not wiped after all makes bootstrap refuse with AlreadyExists: nothing is lost).
        return Step(BOOTSTRAP, "etcd waits for a bootstrap")
    if node.kind == ETCD_RUNNING:
        age = _age(j.steps.get(jn.RESET), now)
        if j.done(jn.RESET) and age is not None and age < RESET_BEGIN_GRACE and not j.done(jn.NODE_BACK):
            return Step(WAIT, "to begin its reset", phase=RESET_BEGIN)
        return Step(START_OVER, "etcd runs with data although this restore recorded a reset")
    return Step(WAIT, "to settle after the reset", phase=REBOOT)  # ETCD_STOPPED: Finished/Stopping


def _before_reset(node: NodeState, o: Options) -> Step:
    empty = node.kind == MAINTENANCE or (
        node.kind == ETCD_PREPARING and (o.abandoned_past_reset or (node.etcd_since or 0) >= o.preparing_long))
    if node.kind == ETCD_PREPARING and not empty:
        return Step(WAIT, "for etcd to leave its pre-start", phase=SETTLE)
    if empty:
        if not o.confirmed:
            return Step(CONFIRM, "etcd is empty: nothing on the node is lost", needs_reset=False)
        return Step(APPLY_CONFIG if node.kind == MAINTENANCE else BOOTSTRAP, "etcd is empty")
    assert node.kind in (ETCD_RUNNING, ETCD_FAILED, ETCD_STOPPED)
    safety = node.kind == ETCD_RUNNING and not o.no_safety_snapshot
    if not o.confirmed:
        return Step(CONFIRM, "etcd holds data that the restore replaces", needs_reset=True, safety=safety)
    if safety and not o.safety_done:
        return Step(SAFETY_SNAPSHOT, "etcd runs: keep what it holds now")
    return Step(RESET, "wipe EPHEMERAL (etcd's data)" + (" and STATE" if o.wipe_state else ""))
