"""A restore on three control-plane nodes: what is broken (``classify``) and what to do next (``plan``), pure.

Talos's documented recovery (siderolabs/talos, website/content/v1.11/advanced/disaster-recovery.md at v1.11.0, the
last tag whose tree carries the guide; v1.13.9's tree has only the reference pages, and the procedure is unchanged in
the code it describes at v1.13.9: internal/app/machined/pkg/system/services/etcd.go): first make sure the quorum
cannot be restored ("restoring quorum might be a better strategy"); no control-plane node of machine type ``init``;
wipe EPHEMERAL (``reset --graceful=false --reboot --system-labels-to-wipe=EPHEMERAL``) on every control-plane node
that is up, after a snapshot; every etcd in ``Preparing``; ``bootstrap --recover-from`` against one node; "remaining
control plane nodes join etcd cluster once control plane endpoint is up". This module adds the guard rails:

* Quorum intact (a majority of etcd's voting members runs): no snapshot restore at all. The data is current; a lost
  member is replaced (``talos-dr replace-member NODE``). Only ``--rollback`` (a point-in-time rollback of a working
  cluster, asked for explicitly) goes on.
* Exactly one bootstrap, by construction: the target is chosen once (the bootstrap node if it is up, else the first
  node up: the stack's order), written to the journal before the call, and never changed: a resume sends the
  bootstrap to that node only, and only while its etcd waits with an empty data directory (Preparing); when it does
  not answer, the restore waits for it (and fails on the timeout) instead of choosing another node. Nothing is
  bootstrapped while any other node's etcd runs or holds data (siderolabs/talos#5500: two bootstraps, two clusters).
* Nothing destroys before this run's own confirmation, which names every node it resets; a node that holds data and
  was not named (it came back during the restore) needs a new confirmation.
* Per-node journal steps (``reset@IP``, ``joined@IP``): a resume never resets a node whose reset the journal records
  and whose state shows it (etcd Preparing, or gone for a reboot).

Nothing here does I/O or reads the clock; ``dr.commands.restore.ha`` probes every node, asks, acts, and asks again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from dr.core import journal as jn
from dr.core.cluster_nodes import ClusterNode, quorum
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
from dr.core.restore_plan import RESET_BEGIN_GRACE, _age

# What is broken.
HEALTHY = "healthy"  # every node's etcd runs as a voting member
QUORUM_INTACT = "quorum intact"  # a majority of the voters runs; some member is lost (or not yet a voter)
QUORUM_LOST = "quorum lost"
UNKNOWN = "unknown"  # etcd runs on enough nodes for a quorum, but their member lists did not answer (yet)

# Actions (the command does them; each names a ``node`` where it acts on one).
REFUSE = "refuse"  # a node refuses our credentials, or none answers: nothing was changed
REFUSE_QUORUM_INTACT = "refuse_quorum_intact"  # exit 29
REFUSE_INIT = "refuse_init"  # exit 30: a node of machine type init
REFUSE_SPLIT = "refuse_split"  # exit 30: a bootstrap now could make a second cluster
WAIT = "wait"
CONFIRM = "confirm"
SAFETY_SNAPSHOT = "safety_snapshot"
RESET = "reset"
START_OVER = "start_over"  # a recorded reset never showed on the node: forget it (it is asked for again)
CHOOSE_TARGET = "choose_target"  # record the one bootstrap node in the journal (before any bootstrap call)
BOOTSTRAP = "bootstrap"
RECOVERY_FAILED = "recovery_failed"
RECOVERED = "recovered"  # the target's etcd runs from the snapshot: record it
JOINED = "joined"  # a node became a voting member of the restored cluster: record it
HEALTH = "health"
KUBECONFIG = "kubeconfig"
DONE = "done"

# Wait phases.
SETTLE = "settle"
REBOOT = "reboot"
RESET_BEGIN = "reset_begin"
RECOVERY = "recovery"
JOIN = "join"

MACHINE_TYPE_OK = "controlplane"
MACHINE_TYPE_INIT = "init"


@dataclass(frozen=True)
class Member:
    """One etcd member as ``talosctl etcd members`` lists it."""

    id: str
    hostname: str
    peer_urls: tuple[str, ...] = ()
    client_urls: tuple[str, ...] = ()
    is_learner: bool = False

    def hosts(self) -> set[str]:
        out = set()
        for url in self.peer_urls + self.client_urls:
            try:
                host = urlsplit(url).hostname
            except ValueError:
                host = None
            if host:
                out.add(host)
        return out


def member_of(node: ClusterNode, members: Sequence[Member]) -> Member | None:
    """The member that is ``node``: its private IP in the member's URLs (etcd advertises the routed address), else
    its hostname."""
    for m in members:
        if node.private_ip in m.hosts():
            return m
    for m in members:
        if m.hostname and m.hostname == node.name:
            return m
    return None


@dataclass(frozen=True)
class NodeView:
    """One node as probed: its state (``dr.core.node_state``), machine type and its etcd's member list (None when it
    did not answer)."""

    node: ClusterNode
    state: NodeState
    machine_type: str | None = None
    members: tuple[Member, ...] | None = None

    @property
    def ip(self) -> str:
        return self.node.private_ip

    @property
    def kind(self) -> str:
        return self.state.kind

    @property
    def up(self) -> bool:
        """Answers and is configured: it takes part in the procedure (maintenance mode has no etcd to wipe)."""
        return self.kind not in (UNREACHABLE, REFUSED, MAINTENANCE)

    @property
    def holds_data(self) -> bool:
        return self.kind in (ETCD_RUNNING, ETCD_FAILED, ETCD_STOPPED)

    def voter(self) -> bool | None:
        """Is this node a voting member, by its own member list (None: unknown)."""
        if self.members is None:
            return None
        m = member_of(self.node, self.members)
        return m is not None and not m.is_learner


@dataclass(frozen=True)
class Health:
    kind: str
    voters: int  # voting members etcd lists (or the node count, when no member list answered)
    serving: tuple[str, ...]  # names of the nodes whose etcd runs as a voter
    lost: tuple[str, ...]  # names of the other nodes

    @property
    def needed(self) -> int:
        return quorum(self.voters)


def classify(views: Sequence[NodeView]) -> Health:
    """Is etcd's quorum intact? Talos asks the member list with ``clientv3.WithRequireLeader`` (v1.13.9
    internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go EtcdMemberList), so a member list that answers
    proves its member sees a leader, which a majority elected: the quorum holds, even when other nodes' Talos API
    does not answer (their etcd may still run). A node serves when its etcd runs and its member list shows it as a
    voter; quorum is a majority of the voters in that list (etcd raft: n/2+1)."""
    lists = [v.members for v in views if v.members and v.kind == ETCD_RUNNING]
    listed = max(lists, key=len) if lists else ()
    voters = sum(1 for m in listed if not m.is_learner) or len(views)
    serving = tuple(v.node.name for v in views if v.kind == ETCD_RUNNING and v.voter())
    lost = tuple(v.node.name for v in views if v.node.name not in serving)
    unknown = [v for v in views if v.kind == ETCD_RUNNING and v.members is None]
    if lists:
        if not lost and voters == len(views) and all(not m.is_learner for m in listed):
            return Health(HEALTHY, voters, serving, lost)
        return Health(QUORUM_INTACT, voters, serving, lost)
    if len(unknown) >= quorum(voters):
        # Never call a quorum lost that may be there: member lists that did not answer are asked again.
        return Health(UNKNOWN, voters, serving, lost)
    return Health(QUORUM_LOST, voters, serving, lost)


def choose_target(views: Sequence[NodeView]) -> NodeView | None:
    """The one node to bootstrap: the bootstrap node (the stack's first) when it is up and its etcd waits, else the
    first such node in the stack's order. Deterministic: the same views give the same node."""
    for v in views:
        if v.kind == ETCD_PREPARING:
            return v
    return None


@dataclass(frozen=True)
class Options:
    confirmed: frozenset[str] = frozenset()  # private IPs of the nodes THIS run's confirmation named as up
    no_safety_snapshot: bool = False
    safety_done: bool = False
    rollback: bool = False
    abandoned_past_reset: bool = False
    preparing_long: float = 30.0
    resent: bool = False  # THIS run already sent the bootstrap again after an earlier run's never arrived


@dataclass(frozen=True)
class Step:
    action: str
    why: str = ""
    node: str | None = None  # private IP of the node the action is for
    phase: str | None = None  # for WAIT
    needs_reset: tuple[str, ...] = ()  # for CONFIRM: the nodes it resets
    safety: bool = False  # for CONFIRM / SAFETY_SNAPSHOT
    rollback: bool = False  # for CONFIRM: the cluster's quorum is intact (a rollback of a working cluster)
    others: tuple[str, ...] = field(default=())  # for REFUSE_SPLIT: the nodes in the way


def _empty(v: NodeView, j: Journal | None, o: Options) -> bool:
    """This node's etcd waits for a bootstrap with an empty data directory."""
    if v.kind != ETCD_PREPARING:
        return False
    ours = j is not None and j.done_on(jn.RESET, v.ip)
    return ours or o.abandoned_past_reset or (v.state.etcd_since or 0) >= o.preparing_long


def plan(views: Sequence[NodeView], j: Journal | None, o: Options, now: datetime) -> Step:
    """The next step; tests/core/test_ha_plan.py is the table."""
    if j is not None and j.done(jn.HEALTHY):
        return Step(KUBECONFIG if not j.done(jn.KUBECONFIG) else DONE)
    touched = bool(j and j.past_point_of_no_return) or o.abandoned_past_reset
    refused = [v for v in views if v.kind == REFUSED]
    if refused and not touched:
        return Step(REFUSE, "the node refuses our credentials", node=refused[0].ip)
    bootstrapped = j is not None and j.done(jn.BOOTSTRAP_STARTED)
    # The guide: no control-plane node of type init (nor anything but controlplane: a worker has no etcd at all).
    wrong = [v for v in views if v.machine_type not in (None, MACHINE_TYPE_OK)]
    if wrong and not bootstrapped:
        return Step(REFUSE_INIT, f"machine type {wrong[0].machine_type} cannot take part in an etcd recovery",
                    node=wrong[0].ip)
    if not touched:
        if not any(v.up for v in views):
            return Step(REFUSE, "no node answers", node=views[0].ip if views else None)
        settling = [v for v in views if v.kind == TRANSITIONING or (v.kind == ETCD_PREPARING and not _empty(v, j, o))]
        if settling:
            return Step(WAIT, "to settle", node=settling[0].ip, phase=SETTLE)
        health = classify(views)
        if health.kind == UNKNOWN:
            return Step(WAIT, "for etcd's member lists to answer", node=views[0].ip, phase=SETTLE)
        if health.kind != QUORUM_LOST and not o.rollback:
            return Step(REFUSE_QUORUM_INTACT, health.kind)
    if j is None or j.bootstrap_target is None:
        return _before_target(views, j, o, now)
    return _after_target(views, j, o)


def _before_target(views: Sequence[NodeView], j: Journal | None, o: Options, now: datetime) -> Step:
    needs_reset: list[NodeView] = []
    for v in views:
        ours = j is not None and j.done_on(jn.RESET, v.ip)
        if ours and v.kind in (UNREACHABLE, TRANSITIONING, ETCD_STOPPED):
            return Step(WAIT, "to come back after its reset", node=v.ip, phase=REBOOT)
        if v.kind == TRANSITIONING or (v.kind == ETCD_PREPARING and not _empty(v, j, o)):
            return Step(WAIT, "to settle", node=v.ip, phase=SETTLE)
        if not v.holds_data:
            continue
        if ours:
            assert j is not None
            if v.kind == ETCD_RUNNING and v.members:
                # Wiped, and its join loop found a cluster with a leader: the other nodes' etcd runs after all (their
                # Talos API did not answer). No restore: that cluster's data is current.
                return Step(REFUSE_QUORUM_INTACT, "the reset node joined a cluster that has a leader", node=v.ip)
            age = _age(j.steps.get(jn.on(jn.RESET, v.ip)), now)
            if v.kind == ETCD_RUNNING and age is not None and age < RESET_BEGIN_GRACE:
                return Step(WAIT, "to begin its reset", node=v.ip, phase=RESET_BEGIN)
            return Step(START_OVER, "etcd holds data although this restore recorded its reset", node=v.ip)
        needs_reset.append(v)
    if needs_reset:
        running = [v for v in views if v.kind == ETCD_RUNNING]
        safety = bool(running) and not o.no_safety_snapshot
        if not all(v.ip in o.confirmed for v in needs_reset):
            health = classify(views)
            return Step(CONFIRM, "etcd holds data that the restore replaces", needs_reset=tuple(v.ip for v in needs_reset),
                        safety=safety, rollback=health.kind != QUORUM_LOST)
        if safety and not o.safety_done:
            return Step(SAFETY_SNAPSHOT, "keep what etcd holds now", node=running[0].ip, safety=True)
        return Step(RESET, "wipe EPHEMERAL (etcd's data)", node=needs_reset[0].ip)
    target = choose_target(views)
    if target is None:
        return Step(REFUSE, "no node answers with its etcd waiting for a bootstrap", node=views[0].ip if views else None)
    if not o.confirmed and not (j is not None and j.past_point_of_no_return):
        return Step(CONFIRM, "every etcd that answers is empty: nothing on the nodes is lost")
    return Step(CHOOSE_TARGET, "the one node to bootstrap", node=target.ip)


def _after_target(views: Sequence[NodeView], j: Journal, o: Options) -> Step:
    target = next((v for v in views if v.ip == j.bootstrap_target), None)
    if target is None:  # the stack no longer names it: never bootstrap another
        return Step(REFUSE_SPLIT, "the recorded bootstrap node is not in the stack's controlPlaneNodes",
                    node=j.bootstrap_target)
    others = [v for v in views if v is not target]
    started = j.done(jn.BOOTSTRAP_STARTED)
    if target.kind in (UNREACHABLE, TRANSITIONING, REFUSED):
        return Step(WAIT, "to answer (it is the recorded bootstrap node: no other node is ever bootstrapped)",
                    node=target.ip, phase=RECOVERY if started else REBOOT)
    in_the_way = tuple(v.ip for v in others if v.holds_data)
    if not started:
        if target.kind != ETCD_PREPARING:
            return Step(REFUSE_SPLIT, f"the recorded bootstrap node's etcd is {target.state.etcd or target.kind} "
                                      "although this restore never sent it the bootstrap", node=target.ip)
        if in_the_way:
            return Step(REFUSE_SPLIT, "another node's etcd runs or holds data", node=target.ip, others=in_the_way)
        return Step(BOOTSTRAP, "etcd waits for a bootstrap", node=target.ip)
    return _after_bootstrap(target, others, j, o, in_the_way)


def _after_bootstrap(target: NodeView, others: Sequence[NodeView], j: Journal, o: Options,
                     in_the_way: tuple[str, ...]) -> Step:
    if target.kind == ETCD_PREPARING:
        long = (target.state.etcd_since or 0) >= o.preparing_long
        if not j.done(jn.BOOTSTRAPPED) and long and not o.resent:
            # Still waiting long after the recorded bootstrap: the request never reached it (stopped while sending).
            # Sending it again is safe: the node refuses a bootstrap once its data directory holds anything.
            if in_the_way:
                return Step(REFUSE_SPLIT, "another node's etcd runs or holds data", node=target.ip, others=in_the_way)
            return Step(BOOTSTRAP, "the earlier bootstrap never reached the node", node=target.ip)
        return Step(WAIT, "for etcd to start from the snapshot", node=target.ip, phase=RECOVERY)
    if target.kind == ETCD_FAILED:
        return Step(RECOVERY_FAILED, target.state.etcd_message or "etcd failed", node=target.ip)
    if target.kind != ETCD_RUNNING:  # stopped: it settles
        return Step(WAIT, "for etcd to start from the snapshot", node=target.ip, phase=RECOVERY)
    if not j.done(jn.BOOTSTRAPPED):
        return Step(RECOVERED, "etcd runs from the snapshot", node=target.ip)
    members = target.members
    if members is None:
        return Step(WAIT, "for the member list to answer", node=target.ip, phase=JOIN)
    for v in others:
        if not v.up:
            continue  # down: said at the end, with how to bring it back
        m = member_of(v.node, members)
        if m is not None and not m.is_learner and v.kind == ETCD_RUNNING:
            if not j.done_on(jn.JOINED, v.ip):
                return Step(JOINED, "a voting member of the restored cluster", node=v.ip)
            continue
        if v.kind in (ETCD_PREPARING, TRANSITIONING) or m is not None:
            return Step(WAIT, "to join the restored cluster and become a voting member", node=v.ip, phase=JOIN)
        # Running (or failed) with data of its own and not a member: it was down during the restore; said at the end.
    return Step(HEALTH, "every node that is up is a voting member")


def strays(views: Sequence[NodeView], target_ip: str | None) -> list[NodeView]:
    """Nodes the restored cluster does not include: down, in maintenance, or running old data of their own."""
    target = next((v for v in views if v.ip == target_ip), None)
    members = target.members if target is not None and target.members is not None else ()
    out = []
    for v in views:
        if v is target:
            continue
        m = member_of(v.node, members)
        if not v.up or m is None or m.is_learner:
            out.append(v)
    return out
