"""Which etcd member a backup reads from, given what each control-plane node said. Pure: no I/O.

Each node is asked two things through its apid (``dr.adapters.talosapi``; both allowed to ``os:etcd:backup``,
machined.go:74,78 at Talos v1.13.9): ``EtcdMemberList`` of its own member (``query_local``; machined asks with
require-leader, so a member that knows no leader fails it), and ``EtcdStatus`` + ``EtcdAlarmList`` (its member id, the
leader it follows, raft term and indexes, alarms). From those answers, :func:`judge` decides

* the **voting members**: every non-learner member a member list names (a learner takes no part in quorum, etcd
  server/etcdserver/api/membership/cluster.go at v3.6.12 ``VotingMembers``); with no list at all, the stack's nodes;
* which members are **healthy**: the node answered both calls, its member knows a leader, is a voter, and has no
  CORRUPT alarm;
* whether a **quorum** (``cluster_nodes.quorum``: a majority of the voters) of healthy members **agrees on one
  leader** that is itself a voter. Two groups following two different leaders cannot both be a majority, so at
  most one group qualifies; a member following another leader (an old leader cut off from the others) is left out.

and :func:`choose` picks the member to snapshot from, or refuses with :class:`~dr.core.errors.NoQuorum` (exit 28).

Why a follower first: ``EtcdSnapshot`` makes the member read its whole backend in one long read transaction and
stream it out; on the leader that competes with the heartbeats and log replication the whole cluster waits on (a
leader slow to send heartbeats makes the followers call an election: etcd's tuning guide, "Time parameters"). Every
member of the agreeing majority holds the same applied data (the Talos disaster-recovery guide: a snapshot "can be
taken on any healthy control plane node, as all etcd instances contain exactly same data"), so a follower that has
applied what the leader committed gives the same snapshot at no cost to the leader. "Up to date" is an applied index
at most ``MAX_LAG`` entries behind the leader's raft index: etcd itself refuses new proposals once a member's apply
falls 5000 entries behind its commit (server/etcdserver/v3_server.go ``maxGapBetweenApplyAndCommitIndex``, v3.6.12),
so a gap under that is a member keeping up; a bigger one is a member catching up, and the leader is used instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from dr.core.cluster_nodes import ClusterNode, quorum
from dr.core.errors import DRError, IntegrityError, NodeError, NodeUnreachable, NoQuorum, SnapshotTooBig, Timeout
from dr.core.etcd_health import EtcdHealth

T = TypeVar("T")

MAX_LAG = 5000  # entries a follower's applied index may trail the leader's raft index and still be "up to date"
RAW_COPY_PATH = "/var/lib/etcd/member/snap/db"  # etcd's backend on a Talos node (the disaster-recovery guide's copy)
# A snapshot that failed for one of these is the member's (or its node's) failure, not the bucket's or the
# credential file's: the next member of the majority (``Choice.after_failure``) may well succeed.
MEMBER_FAILURES = (NodeUnreachable, NodeError, Timeout, IntegrityError, SnapshotTooBig)


@dataclass(frozen=True)
class EtcdMember:
    """One etcd member as ``EtcdMemberList`` reports it (machine.proto ``EtcdMember``; ``name`` is its hostname)."""

    id: int
    name: str
    peer_urls: tuple[str, ...] = ()
    client_urls: tuple[str, ...] = ()
    is_learner: bool = False


@dataclass(frozen=True)
class NodeAnswer:
    """What one node said: its member list and its status (each None when that call failed, ``error`` says why)."""

    node: ClusterNode
    members: tuple[EtcdMember, ...] | None = None
    status: EtcdHealth | None = None
    error: str = ""


@dataclass(frozen=True)
class MemberState:
    """The verdict on one node: ``healthy`` means part of the agreeing majority's candidates."""

    node: ClusterNode
    member_id: int  # 0 when the node did not say
    healthy: bool
    state: str  # leader | follower | learner | no leader | member list failed | not answering | not a voting member
    #             | corrupt | other leader | not in the stack
    detail: str = ""

    @property
    def label(self) -> str:
        return f"{self.node.name} ({self.node.private_ip})"

    def describe(self) -> str:
        return f"{self.label}: {self.state}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Judgement:
    states: tuple[MemberState, ...]
    voters: tuple[EtcdMember, ...]  # empty when no member list answered
    voting_count: int  # len(voters), or the stack's node count when no list answered
    needed: int  # quorum(voting_count)
    leader: int  # the leader the majority follows; 0 without one
    agreeing: tuple[MemberState, ...]  # healthy members following ``leader``

    @property
    def has_quorum(self) -> bool:
        return self.leader != 0 and len(self.agreeing) >= self.needed

    def summary(self) -> str:
        return "; ".join(s.describe() for s in self.states)


@dataclass(frozen=True)
class Choice:
    """The member to snapshot from, and why."""

    source: MemberState
    judgement: Judgement
    reason: str
    quorum: bool = True  # False only when the caller accepted a snapshot without one
    # The other members of the majority, in the order to try them when the source's snapshot fails (each with why):
    # only for a choice made here, never for a node the user named or a snapshot without quorum.
    fallbacks: tuple[tuple[MemberState, str], ...] = ()

    def after_failure(self, error: str) -> Choice | None:
        """The next member to snapshot from after ``source`` failed with ``error``; None when none is left."""
        if not self.fallbacks:
            return None
        (source, why), *rest = self.fallbacks
        return Choice(source, self.judgement, f"{why}; {self.source.label} failed: {error}", self.quorum,
                      tuple(rest))

    @property
    def member_id_hex(self) -> str:
        return f"{self.source.member_id:x}" if self.source.member_id else ""

    @property
    def quorum_text(self) -> str:
        """"2/3": healthy voters agreeing on the leader / voting members; "none" without a quorum."""
        j = self.judgement
        return f"{len(j.agreeing)}/{j.voting_count}" if self.quorum else "none"

    def record(self) -> dict[str, str]:
        """What a snapshot records about where it came from (S3 metadata, the metrics line, ``--json``)."""
        name = self.source.node.name
        if name == self.source.node.private_ip:  # only the IP is known (the Lambda): the member's own name
            name = next((m.name for m in self.judgement.voters if m.id == self.source.member_id and m.name), name)
        return {"node": name, "ip": self.source.node.private_ip, "id": self.member_id_hex, "quorum": self.quorum_text}

    def lines(self) -> list[str]:
        """Per-member state and the choice, for a person reading the backup's output."""
        j = self.judgement
        head = (f"etcd: {len(j.agreeing)} of {j.voting_count} voting members healthy and following leader "
                f"{j.leader:x} ({j.needed} needed)" if j.has_quorum else
                f"etcd: NO quorum ({len(j.agreeing)} of {j.voting_count} voting members agree on a leader, "
                f"{j.needed} needed)")
        member = f", member {self.member_id_hex}" if self.member_id_hex else ""
        return [head, *(f"  {s.describe()}" for s in j.states),
                f"snapshot from {self.source.label}{member}: {self.reason}"]


def _voters(answers: Sequence[NodeAnswer]) -> tuple[EtcdMember, ...]:
    seen: dict[int, EtcdMember] = {}
    for a in answers:
        for m in a.members or ():
            if not m.is_learner:
                seen.setdefault(m.id, m)
    return tuple(seen.values())


def _state(a: NodeAnswer, voter_ids: set[int]) -> MemberState:
    st = a.status
    if st is None:
        return MemberState(a.node, 0, False, "not answering", a.error or "no etcd status")
    mid = st.member_id
    corrupt = any(m == mid and name == "CORRUPT" for m, name in st.member_alarms)
    if corrupt:
        return MemberState(a.node, mid, False, "corrupt", "etcd raised a CORRUPT alarm for this member")
    if st.is_learner:
        return MemberState(a.node, mid, False, "learner", "not a voting member yet (still joining)")
    if st.leader == 0:
        return MemberState(a.node, mid, False, "no leader", a.error or "its etcd knows no leader")
    if a.members is None:  # machined asks with require-leader: "no leader" is etcd's own word for it
        state = "no leader" if "no leader" in a.error else "member list failed"
        return MemberState(a.node, mid, False, state, a.error or "its member list did not answer")
    if voter_ids and mid not in voter_ids:
        return MemberState(a.node, mid, False, "not a voting member", "no member list names it")
    role = "leader" if st.leader == mid else "follower"
    return MemberState(a.node, mid, True, role, f"term {st.raft_term}, applied index {st.raft_applied_index}")


def judge(nodes: Sequence[ClusterNode], answers: Sequence[NodeAnswer]) -> Judgement:
    """Voters, per-node health, and the leader a quorum of healthy voters agrees on (0 when none does)."""
    by_ip = {a.node.private_ip: a for a in answers}
    ordered = [by_ip.get(n.private_ip) or NodeAnswer(n, error="not asked") for n in nodes]
    voters = _voters(ordered)
    voter_ids = {m.id for m in voters}
    voting_count = len(voters) if voters else len(nodes)
    states = [_state(a, voter_ids) for a in ordered]
    groups: dict[int, list[MemberState]] = {}
    for s, a in zip(states, ordered, strict=True):
        if s.healthy and a.status is not None:
            groups.setdefault(a.status.leader, []).append(s)
    leader, agreeing = 0, list[MemberState]()
    for lead, group in groups.items():
        if len(group) > len(agreeing) and (not voter_ids or lead in voter_ids):
            leader, agreeing = lead, group
    needed = quorum(voting_count)
    if len(agreeing) < needed:
        leader = 0
    if leader:
        # a healthy member that follows some other leader is not part of the majority
        states = [MemberState(s.node, s.member_id, False, "other leader",
                              f"follows {by_ip[s.node.private_ip].status.leader:x}, the majority {leader:x}")  # type: ignore[union-attr]
                  if s.healthy and s not in agreeing else s for s in states]
    return Judgement(tuple(states), voters, voting_count, needed, leader, tuple(agreeing))


def _status(answers: Sequence[NodeAnswer], s: MemberState) -> EtcdHealth | None:
    return next((a.status for a in answers if a.node.private_ip == s.node.private_ip), None)


def _ranked(j: Judgement, answers: Sequence[NodeAnswer]) -> list[tuple[MemberState, str]]:
    """Every member of the agreeing majority, best source first, each with why: the followers that are up to date
    (most applied first, then the stack's order), then the leader, then followers that are behind (most applied
    first). Every one of them holds the majority's data; the order only keeps the snapshot's long read off the
    leader while a follower can serve it."""
    leader_state = next((s for s in j.agreeing if s.member_id == j.leader), None)
    indexes = {s.node.private_ip: _status(answers, s) for s in j.agreeing}
    lead_status = indexes.get(leader_state.node.private_ip) if leader_state else None
    top = lead_status.raft_index if lead_status else max(h.raft_index for h in indexes.values() if h)
    current: list[tuple[int, int, MemberState]] = []
    behind: list[tuple[int, int, MemberState]] = []
    for rank, s in enumerate(j.agreeing):
        h = indexes[s.node.private_ip]
        if s.member_id == j.leader or h is None:
            continue
        (current if top - h.raft_applied_index <= MAX_LAG else behind).append((-h.raft_applied_index, rank, s))
    ranked = [(s, f"a follower of leader {j.leader:x} that is up to date (applied index within {MAX_LAG} of the "
                  "leader's): the snapshot's long read stays off the leader") for _, _, s in sorted(current)]
    if leader_state is not None:
        ranked.append((leader_state, "the leader: no follower that answered is up to date" if not ranked else
                       "the leader, after the up-to-date followers"))
    why = ("the most up-to-date member that answered: the leader's node did not answer" if leader_state is None
           else "a follower that is catching up, after the leader")
    ranked.extend((s, why) for _, _, s in sorted(behind))
    return ranked


def _no_quorum(j: Judgement, answers: Sequence[NodeAnswer], command: str) -> NoQuorum:
    answering = [s for s in j.states if s.state != "not answering"]
    best = max(answering, key=lambda s: (_status(answers, s) or EtcdHealth(0, 0, 0)).raft_applied_index,
               default=j.states[0] if j.states else None)
    ip = best.node.private_ip if best else "<private ip>"
    eip = best.node.public_ip if best else "<elastic ip>"
    return NoQuorum(
        f"etcd has no quorum: {len(j.agreeing)} of {j.voting_count} voting members are healthy and agree on one leader "
        f"({j.needed} needed), so no snapshot was taken: {j.summary()}",
        f"a snapshot from one member without quorum is possible but may miss the latest writes: `{command} --node "
        f"{ip} --no-quorum-ok`; if etcd answers nowhere, copy its database file as the Talos disaster-recovery "
        f"guide's last resort (v1.13, \"Disaster database snapshot\"): `talosctl -n {ip} -e {eip} cp {RAW_COPY_PATH} "
        ".` then restore it with `talos-dr restore --from-data-dir-copy ./db`",
    )


def choose(nodes: Sequence[ClusterNode], answers: Sequence[NodeAnswer], *, node: str | None = None,
           allow_no_quorum: bool = False, command: str = "talos-dr backup") -> Choice:
    """The member to snapshot from. ``node`` (a private IP the user named) is used whatever its health, once the
    quorum check passed (``Choice.source.healthy`` says whether it is part of the majority). Without a quorum:
    ``NoQuorum`` (exit 28), unless ``allow_no_quorum``: then ``node``, or the answering voter with the highest
    applied index (the one most likely to hold the latest writes)."""
    j = judge(nodes, answers)
    named = next((s for s in j.states if s.node.private_ip == node), None) if node else None
    if node and named is None:
        named = MemberState(ClusterNode(name=node, private_ip=node, public_ip=node), 0, False, "not in the stack",
                            "not one of the stack's control-plane nodes")
    if j.has_quorum:
        if named is not None:
            why = "named with --node" + ("" if named.healthy else f", although it is {named.state}")
            return Choice(named, j, why)
        (source, why), *rest = _ranked(j, answers)
        return Choice(source, j, why, fallbacks=tuple(rest))
    if not allow_no_quorum:
        raise _no_quorum(j, answers, command)
    if named is not None:
        return Choice(named, j, "named with --node; no quorum (accepted with --no-quorum-ok)", quorum=False)
    answering = [s for s in j.states if _status(answers, s) is not None]
    if not answering:
        raise _no_quorum(j, answers, command)
    voters_first = sorted(answering, key=lambda s: (s.state == "learner",
                                                    -(_status(answers, s).raft_applied_index)))  # type: ignore[union-attr]
    return Choice(voters_first[0], j, "the answering member with the highest applied index; no quorum (accepted "
                  "with --no-quorum-ok): the snapshot may miss the latest writes", quorum=False)


def from_members(choice: Choice | None, attempt: Callable[[Choice | None], T], *,
                 on_failure: Callable[[Choice, DRError, Choice], None],
                 may_go_on: Callable[[], bool] = lambda: True) -> tuple[T, Choice | None]:
    """``attempt(choice)``; when it fails with one of ``MEMBER_FAILURES`` and the choice has a next member
    (``Choice.after_failure``) and ``may_go_on()``, ``on_failure(failed, error, next)`` says so and the next member is
    tried. Any other failure, the last member's, or one when ``may_go_on()`` is false, is raised as it is. One node
    (``choice`` None), a node named with --node and a snapshot without quorum have no next member: one attempt.
    Returns the result and the choice that gave it. (Every caller owns its I/O; this only orders the attempts.)"""
    while True:
        try:
            return attempt(choice), choice
        except MEMBER_FAILURES as exc:
            nxt = choice.after_failure(exc.message) if choice is not None else None
            if choice is None or nxt is None or not may_go_on():
                raise
            on_failure(choice, exc, nxt)
            choice = nxt

