"""Replacing one lost etcd member while the others keep a quorum: no snapshot restore, only etcd's own membership and
Talos's join loop. Pure: the checks and the next step, a function of what every node answered (``Seen``), the
replacement's journal and this run's options; ``dr.commands.replace_member`` probes, asks :func:`plan`, acts, and
asks again, until ``DONE`` or a refusal. Tested as a table (tests/core/test_member_repair.py).

The etcd facts the rules rest on (etcd v3.6.12, the version Talos v1.13.9 runs):

* A voting member can be removed only while the members left keep a quorum of *started* members
  (server/etcdserver/api/membership/cluster.go ``IsReadyToRemoveVotingMember``, checked by server.go
  ``mayRemoveMember`` under ``--strict-reconfig-check``, on by default): with three voters and one lost, the two left
  are a quorum of two. Talos's ``EtcdRemoveMemberByID`` (v1alpha1_server.go:1866-1893) calls ``MemberRemove`` with
  ``WithRequireLeader``: it fails, and removes nothing, when the node asked has no leader.
* A removed member's ID is remembered (``ValidateConfigurationChange``: ``ErrIDRemoved``): an old instance that comes
  back with its old data is refused by the cluster instead of rejoining with stale data.
* A new member cannot be added with the peer URL of a member still listed (``ErrPeerURLexists``, the same function).

Does removing the lost member first still matter, given that Talos's join loop removes a member of the joining
node's own name itself (services/etcd.go:286-325 ``addMember``, at v1.13.9)? Yes, in three cases, and it is harmless
in the fourth:

1. The replacement keeps the private IP (the stack pins it) but gets another hostname (a machine config that sets
   ``machine.network.hostname``, or a platform that names instances otherwise): ``addMember`` finds no member of its
   name, and ``MemberAddAsLearner`` with the same peer URL fails with ``ErrPeerURLexists`` on every attempt (the loop
   retries every 3 s, services/etcd.go:327-396), until ``EtcdJoinTimeout`` (30 min, pkg/machinery/constants/
   constants.go:926) fails etcd's pre-start. The join never happens.
2. The replacement gets another IP *and* another hostname: it joins, and the dead member stays a voter for ever, four
   members of which three answer: quorum 3 of 4, no loss tolerated, and ``talosctl health`` fails (every member's
   IP must be a control-plane node's: pkg/cluster/check/etcd.go at v1.13.9).
3. The old instance was not dead but cut off (stopped, partitioned): once removed, etcd refuses it if it comes back.
4. Same IP, same hostname (Talos on AWS takes its hostname from IMDS, ``ip-a-b-c-d``: platform/aws/aws.go:166-175,
   sandbox/CONFORMANCE.md "a replaced instance's identity"; so a pinned IP keeps its name): the join loop would
   remove it too; removing it first changes nothing but the order.

Removing it does **not** restore fault tolerance: two voters of two tolerate no loss, as two of three do (a quorum of
2 either way, raft's (n/2)+1). Only the rebuilt third member does; so the rebuild follows the removal at once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from dr.core.cluster_nodes import ClusterNode, quorum
from dr.core.errors import ConfigError
from dr.core.ha_plan import Member, member_of  # one member type and one matching rule, with the restore
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

JOURNAL_NAME = "replace-member-journal.json"
FORMAT = 1

# Actions.
REFUSE = "refuse"  # the replacement cannot proceed (exit 31); ``refusal`` says which kind
CONFIRM = "confirm"  # show the plan and the per-node state, ask for yes
SAFETY_SNAPSHOT = "safety_snapshot"
REMOVE = "remove"  # etcd remove-member <hex id>, asked of a healthy member
RESET = "reset"  # reset --graceful=false --reboot --system-labels-to-wipe EPHEMERAL on the lost node itself
REBUILD = "rebuild"  # the instance is gone: say to run `pulumi up --refresh` (once), then wait
WAIT = "wait"
NODE_READY = "node_ready"  # the member votes and etcd is healthy on all: look at its Kubernetes Node
DONE = "done"

# Refusals.
NO_QUORUM = "no_quorum"  # the others are not a healthy quorum without the lost one: `talos-dr restore`
HEALTHY = "healthy"  # the node named is a healthy voter: nothing to replace
ONE_NODE = "one_node"  # a single-node cluster: a lost member is a lost cluster

# Wait phases (each has its timeout in the command).
SETTLE = "settle"  # a node is booting or rebooting before anything was changed
REBUILT = "rebuilt"  # the instance is being rebuilt (pulumi up) or reset: until it answers again
JOIN = "join"  # the node answers: until it is a learner (Talos's join loop: MemberAddAsLearner)
PROMOTE = "promote"  # a learner: until Talos promotes it (promoteMember, services/etcd.go:604-661)
ETCD_HEALTHY = "etcd_healthy"  # a voter: until etcd runs and reports healthy on every node
AGREE = "agree"  # the healthy members list different members: a membership change is being applied

# Rebuild modes, shown at the confirmation.
BY_PULUMI = "pulumi"  # the instance is gone: `pulumi up --refresh` recreates it with the same private IP
BY_RESET = "reset"  # the instance answers but its etcd is broken: wipe its EPHEMERAL, it rejoins empty


def hex_id(m: Member) -> str:
    """How talosctl prints and takes member IDs: ``%016x`` (pkg/machinery/resources/etcd/etcd.go FormatMemberID)."""
    return f"{int(m.id, 16):016x}"


def describe(m: Member) -> str:
    return f"{m.hostname or '(not started)'} {hex_id(m)} ({'learner' if m.is_learner else 'voter'})"


def parse_member_id(text: str) -> int:
    """A member ID as talosctl takes it (hexadecimal, ParseMemberID); ConfigError otherwise."""
    try:
        return int(text, 16)
    except ValueError:
        raise ConfigError(f"{text!r} is not an etcd member ID (hexadecimal, as `talosctl etcd members` prints it)",
                          None) from None


@dataclass(frozen=True)
class Seen:
    """One node as this run saw it: its state (``dr.core.node_state``), the member list it answered (None when it
    did not), and etcd's service health on it (``OK``/``Fail``/None)."""

    node: ClusterNode
    state: NodeState
    members: tuple[Member, ...] | None = None
    health: str | None = None
    error: str = ""

    def describe(self) -> str:
        h = f", health {self.health}" if self.health and self.state.kind == ETCD_RUNNING else ""
        return f"{self.state.describe()}{h}"


def find_target(nodes: list[ClusterNode], given: str) -> ClusterNode:
    """The node the operator named: by stack name, private IP, Elastic IP or instance ID."""
    for n in nodes:
        if given in (n.name, n.private_ip, n.public_ip, n.instance_id) and given:
            return n
    names = ", ".join(f"{n.name} ({n.private_ip})" for n in nodes) or "none"
    raise ConfigError(f"no control-plane node of this stack is called {given!r} (nodes: {names})",
                      "name it as `talos-dr status` or the stack output controlPlaneNodes does: its name or private IP")


@dataclass
class RepairJournal:
    """One replacement in progress (``.talos/replace-member-journal.json``). A record, not the truth: every run
    judges the next step by what the nodes answer, and a journal never stands in for this run's confirmation."""

    target: str  # the node's private IP
    target_name: str
    mode: str = ""  # BY_PULUMI or BY_RESET, as confirmed
    started_at: str = ""
    updated_at: str = ""
    removed_id: str = ""  # hex ID of the member this replacement removed
    steps: dict[str, str] = field(default_factory=dict)  # step -> UTC time it finished
    safety_snapshot: str | None = None
    format: int = FORMAT

    def done(self, step: str) -> bool:
        return step in self.steps


def dumps(j: RepairJournal) -> str:
    return json.dumps(asdict(j), indent=2, sort_keys=True) + "\n"


def parse(raw: str, origin: str) -> RepairJournal:
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("unknown format")
        known = set(RepairJournal.__dataclass_fields__)
        return RepairJournal(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"member replacement journal {origin} is unreadable ({exc})",
                          f"look at `talosctl etcd members`, then move the file away (`mv {origin} {origin}.bad`) "
                          "and run the same command again") from exc


@dataclass(frozen=True)
class Options:
    confirmed: bool = False  # confirmed in THIS run
    confirmed_mode: str = ""  # the rebuild this run's confirmation covered
    safety_done: bool = False  # the safety snapshot was attempted in THIS run (a failure is a warning)
    no_safety_snapshot: bool = False
    rebuild_said: bool = False  # THIS run already said what to run to rebuild the instance


@dataclass(frozen=True)
class Step:
    action: str
    why: str = ""
    phase: str | None = None  # WAIT
    refusal: str | None = None  # REFUSE
    member: Member | None = None  # REMOVE: the member; REFUSE HEALTHY: the healthy one
    mode: str = ""  # CONFIRM, REBUILD, RESET


@dataclass(frozen=True)
class Quorum:
    """What the healthy others say: ``members`` (the list they agree on), ``voters`` among them, the others that are
    healthy voters, and how many of those a quorum needs."""

    members: tuple[Member, ...]
    healthy: tuple[ClusterNode, ...]
    voters: int
    needed: int

    @property
    def ok(self) -> bool:
        return len(self.healthy) >= self.needed


def quorum_of_others(target: ClusterNode, seen: list[Seen]) -> Quorum | Step:
    """The quorum without ``target``, or a REFUSE step saying why there is none."""
    others = [s for s in seen if s.node.private_ip != target.private_ip]
    answering = [s for s in others if s.state.kind == ETCD_RUNNING and s.members is not None]
    lists = {tuple(sorted((hex_id(m), m.is_learner) for m in s.members or ())) for s in answering}
    if len(lists) > 1:
        # A membership change (a removal, the join loop's MemberAddAsLearner, a promotion) is applied by each member
        # when raft commits it: for a moment two members list different members. Never act on that; look again.
        shown = ", ".join(f"{s.node.name} lists {len(s.members or ())}" for s in answering)
        return Step(WAIT, f"for the members to list the same members (a membership change is being applied: "
                          f"{shown})", phase=AGREE)
    members = answering[0].members if answering else ()
    healthy = tuple(s.node for s in answering
                    if (me := member_of(s.node, members or ())) is not None and not me.is_learner
                    and s.health != "Fail")
    voters = [m for m in members or () if not m.is_learner]
    # The quorum counts every voter still listed, the lost one too until it is removed (raft: (n/2)+1).
    q = Quorum(tuple(members or ()), healthy, len(voters), quorum(len(voters)) if voters else quorum(len(seen)))
    if not q.ok:
        down = ", ".join(f"{s.node.name} {s.describe()}" for s in others if s.node not in healthy) or "none"
        return Step(REFUSE, f"without {target.name}, {len(healthy)} healthy voting member(s) answer, and a quorum "
                            f"of this cluster needs {q.needed} (not healthy: {down})", refusal=NO_QUORUM)
    return q


def plan(target: ClusterNode, seen: list[Seen], j: RepairJournal | None, o: Options) -> Step:
    """The next step of replacing ``target``'s member; see the module docstring and the tests' table."""
    if len(seen) < 3:
        return Step(REFUSE, f"this cluster has {len(seen)} control-plane node(s): losing its member is losing the "
                            "cluster", refusal=ONE_NODE)
    q = quorum_of_others(target, seen)
    if isinstance(q, Step):
        return q
    me = next(s for s in seen if s.node.private_ip == target.private_ip)
    removed = j.removed_id if j is not None else ""
    mine = _mine(target, q.members, removed)
    if mine is not None and hex_id(mine) == removed:
        mine_new: Member | None = None
        old: Member | None = mine  # the removal did not happen (or not yet): do it again (NotFound is fine)
    elif mine is not None and removed:
        mine_new, old = mine, None  # a new member of this node: the rebuilt one
    else:
        mine_new, old = (mine, None) if mine is not None and mine.is_learner else (None, mine)
    if old is not None and not old.is_learner:
        return _before_removal(target, me, old, j, o)
    if mine_new is None:
        return _rebuild(target, me, j, o)
    if mine_new.is_learner:
        return Step(WAIT, f"for {target.name}'s new member {hex_id(mine_new)} to be promoted to a voter "
                          "(Talos's promoteMember, once it has caught up with the leader)", phase=PROMOTE)
    unhealthy = [s for s in seen if s.state.kind != ETCD_RUNNING or s.health != "OK"]
    if unhealthy:
        shown = ", ".join(f"{s.node.name} ({s.describe()})" for s in unhealthy)
        return Step(WAIT, f"for etcd to run and report healthy on every node (not yet: {shown})",
                    phase=ETCD_HEALTHY)
    return Step(NODE_READY, f"{target.name}'s member {hex_id(mine_new)} votes and etcd is healthy on every node")


def _mine(target: ClusterNode, members: tuple[Member, ...], removed: str) -> Member | None:
    """The member that is ``target`` (``ha_plan.member_of``: its private IP in the member's URLs, else its name); a
    member other than the one this replacement removed first, should both be listed for a moment."""
    matches = [m for m in members if member_of(target, [m]) is not None]
    fresh = [m for m in matches if hex_id(m) != removed]
    found = fresh or matches
    return found[0] if found else None


def new_member(target: ClusterNode, seen: list[Seen], removed: str) -> Member | None:
    """``target``'s member as the healthy others list it, when it is not the one this replacement removed (None
    while there is none, or while the others do not agree)."""
    q = quorum_of_others(target, seen)
    if isinstance(q, Step):
        return None
    mine = _mine(target, q.members, removed)
    return mine if mine is not None and (not removed or hex_id(mine) != removed) else None


def _mode_for(me: Seen) -> str:
    return BY_PULUMI if me.state.kind == UNREACHABLE else BY_RESET


def _before_removal(target: ClusterNode, me: Seen, old: Member, j: RepairJournal | None, o: Options) -> Step:
    """``target``'s old member still votes: refuse when it is healthy, else confirm, snapshot, remove."""
    if me.state.kind == ETCD_RUNNING and me.health != "Fail" and not (j is not None and j.removed_id):
        return Step(REFUSE, f"{target.name} answers and its member {hex_id(old)} is a healthy voter", refusal=HEALTHY,
                    member=old)
    if me.state.kind == TRANSITIONING and not o.confirmed:
        return Step(WAIT, f"for {target.name} to settle (it is {me.state.describe()})", phase=SETTLE)
    if not o.confirmed:
        return Step(CONFIRM, f"remove member {hex_id(old)} of {target.name}", mode=_mode_for(me), member=old)
    if not o.safety_done and not o.no_safety_snapshot and not (j is not None and j.safety_snapshot):
        return Step(SAFETY_SNAPSHOT, "keep what the healthy members hold before the membership changes")
    return Step(REMOVE, f"{target.name}'s member {hex_id(old)} does not answer as a healthy voter", member=old)


def _rebuild(target: ClusterNode, me: Seen, j: RepairJournal | None, o: Options) -> Step:
    """No member of ``target`` is listed: it has to come back empty and join."""
    kind = me.state.kind
    reset_sent = j is not None and j.done(RESET)
    if kind == ETCD_PREPARING:
        return Step(WAIT, f"for {target.name} to join as a learner (its etcd is in Talos's join loop)", phase=JOIN)
    if kind in (UNREACHABLE, TRANSITIONING, MAINTENANCE, REFUSED):
        if kind == UNREACHABLE and not reset_sent and not o.rebuild_said:
            return Step(REBUILD, f"{target.name} does not answer: its instance is rebuilt by `pulumi up --refresh`",
                        mode=BY_PULUMI)
        return Step(WAIT, f"for {target.name} to come back and start etcd (it is {me.state.describe()})",
                    phase=REBUILT)
    assert kind in (ETCD_RUNNING, ETCD_FAILED, ETCD_STOPPED)
    own = _mine(target, me.members or (), j.removed_id if j is not None else "") if me.members else None
    if kind == ETCD_RUNNING and own is not None and (j is None or hex_id(own) != j.removed_id):
        # Its own etcd answers a member list with a leader and lists it as a member: it has joined, and the others'
        # lists (read before) do not show it yet. Never reset a member that works: look again.
        return Step(WAIT, f"for the others to list {target.name}'s new member {hex_id(own)}", phase=AGREE)
    # It answers with etcd data the cluster no longer lists (etcd refuses a removed member, so it fails or stops):
    # only wiping EPHEMERAL brings it back through the join loop. Never twice for one journal.
    if reset_sent:
        return Step(WAIT, f"for {target.name} to come back from its reset (it is {me.state.describe()})",
                    phase=REBUILT)
    if not (o.confirmed and o.confirmed_mode == BY_RESET):
        return Step(CONFIRM, f"wipe EPHEMERAL on {target.name} (its etcd holds data the cluster no longer lists)",
                    mode=BY_RESET)
    return Step(RESET, f"{target.name} answers, and its etcd ({me.state.describe()}) is not a member", mode=BY_RESET)
