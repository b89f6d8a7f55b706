"""A multi-node sandbox's etcd membership, as Talos v1.13.9 drives it (internal/app/machined/pkg/system/services/etcd.go).

A control-plane node whose etcd data directory is empty and that was not asked to bootstrap runs the join loop in etcd's
pre-start (``argsForControlPlane`` -> ``buildInitialCluster`` -> ``addMember``):

* MemberList, with ``WithRequireLeader``, through a client to the other control-plane nodes
  (``etcd.NewClientFromControlPlaneIPs``); a member without a leader refuses (``etcdserver: no leader``), a node that
  is down does not answer: the loop retries (every 3 s upstream, ``retry.Constant(EtcdJoinTimeout, WithUnits(3s))``),
  logging "etcd is waiting to join the cluster, if this node is the first node in the cluster, please run
  `talosctl bootstrap` against one of the following IPs:" at most every 30 s. The etcd service stays in Preparing.
* a member with this node's name (its hostname) is removed first: the node's old self, whose data is gone;
* MemberAddAsLearner with the node's peer URL, then MemberList again; etcd starts with ``initial-cluster`` = that list
  (the new member under its own name) and ``initial-cluster-state=existing``;
* once etcd runs, ``promoteMember`` retries MemberPromote through every endpoint until etcd accepts it (etcd refuses
  until the learner has caught up with the leader; etcd allows one learner at a time by default, so a second
  joining node waits for the first one's promotion: its MemberAddAsLearner fails with ``too many learner members``).

The sandbox node is lazy (no daemon): ``join`` and ``promote`` run inside ``Node._settle`` whenever the node is touched
(any talosctl call, ``Sandbox`` helpers, and the multi-node apid's tick, sandbox/node_apid.py), one attempt at a time.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sandbox import etcd

if TYPE_CHECKING:
    from sandbox.node import Node, State

# How often the sandbox's join loop tries again (Talos: every 3 s with up to 1 s jitter; time runs faster here).
JOIN_RETRY_SECONDS = 0.3
# LeaveCluster retries an unhealthy cluster for 5 minutes, every 10 s (internal/pkg/etcd/etcd.go:154-197); the sandbox
# for 10 s, every 0.5 s (etcd's own wait, HealthInterval, is 5 s).
LEAVE_RETRY_SECONDS = 10.0
WAITING = ("etcd is waiting to join the cluster, if this node is the first node in the cluster, please run "
           "`talosctl bootstrap` against one of the following IPs:")


def _log(node: Node, line: str) -> None:
    """machined's log of the node (``<dir>/logs/machined[-i].log``)."""
    path = node.paths.log("machined")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(f"{time.strftime('%Y/%m/%d %H:%M:%S', time.gmtime())} {line}\n")


def own_peer_url(node: Node) -> str:
    return etcd.peer_url(node.info.etcd_peer_port, node.info.etcd_host)


def _add_member(node: Node, endpoint: str) -> tuple[str, int]:
    """services/etcd.go addMember against one endpoint: (initial-cluster, learner id), or EtcdFailure."""
    name = node.info.etcd_name
    for member in etcd.member_list(endpoint, require_leader=True, timeout=2):
        if member["name"] == name:
            etcd.member_remove(endpoint, member["id"])
    learner = etcd.member_add_learner(endpoint, [own_peer_url(node)])
    members = etcd.member_list(endpoint, require_leader=True, timeout=2)
    initial = ",".join(f"{name if m['id'] == learner else m['name']}={u}" for m in members for u in m["peer_urls"])
    return initial, learner


def join(node: Node, st: State, now: float) -> None:
    """One attempt of the join loop for a configured node with an empty etcd data directory and no bootstrap."""
    if now - st.join_tried_at < JOIN_RETRY_SECONDS:
        return
    st.join_tried_at = now
    if st.etcd_initial_cluster is not None:
        # Added already; its process failed to start: the restart runner starts it again with the same arguments
        # (restart.Forever, runner/restart/restart.go).
        node._run_etcd(st)
        return
    errors = []
    for peer in node.siblings():
        try:
            initial, learner = _add_member(node, peer.info.etcd_endpoint)
        except etcd.EtcdFailure as exc:
            errors.append(f"{peer.info.private_ip}: {exc}")
            continue
        st.etcd_initial_cluster, st.learner_id, st.join_waiting = initial, learner, None
        _log(node, f"etcd joins the cluster as learner {learner:016x} (initial cluster {initial})")
        node._run_etcd(st)
        return
    if st.join_waiting is None:  # the nag, once per wait (upstream: at most every 30 s)
        _log(node, WAITING)
        _log(node, f"[{node.info.private_ip}/32]")
    reason = "; ".join(errors) or "no other control-plane node"
    if reason != st.join_waiting:  # logged when it changes, not at every attempt
        _log(node, f"error getting etcd member list: {reason}")
    st.join_waiting = reason


def promote(node: Node, st: State) -> None:
    """One round of promoteMember: MemberPromote through each endpoint (the others first: the learner cannot promote
    itself) until one accepts."""
    assert st.learner_id is not None
    errors = []
    for peer in [*node.siblings(), node]:
        try:
            etcd.member_promote(peer.info.etcd_endpoint, st.learner_id)
        except etcd.EtcdFailure as exc:
            if "member not found" in str(exc):
                st.learner_id = None  # removed meanwhile: nothing left to promote
                return
            errors.append(f"{peer.info.private_ip}: {exc}")
            continue
        _log(node, "successfully promoted etcd member")
        st.learner_id, st.join_waiting = None, None
        st.kubelet_registered = node.register_kubelet()  # a learner serves no writes: its Node goes in now
        return
    reason = "failed promoting member: " + "; ".join(errors)
    if reason != st.join_waiting:
        _log(node, reason)
    st.join_waiting = reason


def answering_endpoint(nodes: list[Node], *, leader: bool = False) -> str | None:
    """The client URL of the first node whose etcd answers (with ``leader``: one that has a leader)."""
    for n in nodes:
        try:
            st = etcd.status(n.info.etcd_endpoint, timeout=2)
        except etcd.EtcdFailure:
            continue
        if not leader or st["leader"]:
            return n.info.etcd_endpoint
    return None


def cluster_call(node: Node, call, *, nodes: list[Node] | None = None):
    """``call(endpoint)`` through a client to every control-plane node (``etcd.NewClientFromControlPlaneIPs``): an
    endpoint that does not answer is skipped; an etcd error (``etcdserver: no leader``) is the answer."""
    last: etcd.EtcdFailure | None = None
    for n in nodes or node.cluster():
        try:
            return call(n.info.etcd_endpoint)
        except etcd.EtcdFailure as exc:
            last = exc
            if "does not answer" in str(exc):
                continue
            raise
    raise last or etcd.EtcdFailure("no control-plane node answers")


def local_member_id(node: Node) -> int | None:
    """GetLocalMemberID: this node's member id (the member named after its hostname), from its own etcd."""
    try:
        return etcd.status(node.info.etcd_endpoint, timeout=2)["member_id"]
    except etcd.EtcdFailure:
        return None


def leave(node: Node, st: State) -> None:
    """internal/pkg/etcd/etcd.go LeaveCluster: remove this node's member (require leader; "member not found" is
    done already), stop etcd, delete its data directory (the data of a removed member is no longer valid).
    Raises EtcdFailure with upstream's wording."""
    member = local_member_id(node)
    if member is None:
        raise etcd.EtcdFailure("etcd is not running on this node")
    deadline = time.monotonic() + LEAVE_RETRY_SECONDS
    while True:
        try:
            cluster_call(node, lambda ep: etcd.member_remove(ep, member))
        except etcd.EtcdFailure as exc:
            # ErrUnhealthy (etcd refuses a reconfiguration until its members have been connected for HealthInterval,
            # 5 s: server/etcdserver/server.go mayRemoveMember) and ErrStopped are retried; not found is done.
            retry = "unhealthy cluster" in str(exc) or "server stopped" in str(exc)
            if retry and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            if "member not found" not in str(exc):
                raise etcd.EtcdFailure(f"failed to remove member {member}: {exc}") from None
        break
    node._stop_etcd(st)
    import shutil

    shutil.rmtree(node.paths.etcd_data, ignore_errors=True)
    st.etcd_initial_cluster, st.learner_id, st.join_waiting = None, None, None
    st.etcd_event("Finished", "Service finished successfully")


def leave_for_reset(node: Node, st: State) -> str | None:
    """The graceful reset's ``leave`` step (v1alpha1_sequencer.go Reset: graceful on a control plane;
    v1alpha1_sequencer_tasks.go LeaveEtcd): nothing when etcd has no ``member`` directory or its service is not
    Running/Stopping/Failed; else LeaveCluster. Returns why the sequence failed, or None. A single node cannot leave
    (the only member of its cluster), as the one-node sandbox always modelled."""
    if not node.multi:
        return "leave etcd"
    if not (node.paths.etcd_data / "member").exists() or st.etcd_state not in ("Running", "Stopping", "Failed"):
        return None
    try:
        leave(node, st)
    except etcd.EtcdFailure as exc:
        return f"leave etcd: failed to leave cluster: {exc}"
    return None
