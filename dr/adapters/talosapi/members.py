"""Ask every control-plane node about its etcd member, at once: the I/O half of ``dr.core.member_choice``.

Per node, through its apid: ``EtcdStatus`` (local to the member: it answers with or without a leader), then
``EtcdMemberList`` (``query_local``: its own member's view, under require-leader, so it fails without a leader), then,
from a member that has a leader, ``EtcdAlarmList`` (it goes through raft, etcd v3.6.12 server/etcdserver/v3_server.go:579-585
``Alarm`` -> ``raftRequestOnce``: without a leader it would only wait). The nodes are asked in parallel, so a node that is
down costs one connect timeout, not one per node; a node whose etcd status does not come back is asked nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from dr.adapters.talosapi.client import UNARY_TIMEOUT, TalosClient
from dr.core.cluster_nodes import ClusterNode
from dr.core.errors import DRError
from dr.core.etcd_health import DEFAULT_QUOTA_BYTES
from dr.core.member_choice import NodeAnswer

# How to reach one node: a TalosClient for it (the CLI dials its Elastic IP and names its private IP in ``nodes``;
# the Lambda, inside the VPC, dials the private IP itself).
Dial = Callable[[ClusterNode], TalosClient]


def ask_node(node: ClusterNode, dial: Dial, *, quota: int = DEFAULT_QUOTA_BYTES,
             timeout: float = UNARY_TIMEOUT) -> NodeAnswer:
    """What ``node`` says about its etcd member; every failure is kept as text in ``NodeAnswer.error``."""
    errors: list[str] = []
    try:
        client = dial(node)
    except DRError as exc:
        return NodeAnswer(node, error=exc.message)
    members = None
    try:
        status = client.etcd_status(quota, timeout=timeout)
    except DRError as exc:  # no status: the member cannot be judged healthy, and a hung etcd would cost another wait
        return NodeAnswer(node, error=exc.message)
    try:
        members = client.etcd_members(query_local=True, timeout=timeout)
    except DRError as exc:
        errors.append(exc.message)
    if members is not None:  # the alarm list goes through raft: asked only of a member that has a leader
        try:
            by_member = client.etcd_alarms(timeout=timeout)
            status = replace(status, alarms=tuple(sorted({n for _, n in by_member})), member_alarms=by_member)
        except DRError as exc:
            errors.append(exc.message)
    return NodeAnswer(node, members, status, "; ".join(errors))


def ask_all(nodes: Sequence[ClusterNode], dial: Dial, *, quota: int = DEFAULT_QUOTA_BYTES,
            timeout: float = UNARY_TIMEOUT) -> list[NodeAnswer]:
    """``ask_node`` for every node, in parallel, in the nodes' order."""
    if not nodes:
        return []
    with ThreadPoolExecutor(max_workers=len(nodes), thread_name_prefix="etcd-member") as pool:
        return list(pool.map(lambda n: ask_node(n, dial, quota=quota, timeout=timeout), nodes))
