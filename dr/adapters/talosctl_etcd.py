"""talosctl's etcd membership change for ``talos-dr replace-member``, over ``dr.adapters.talosctl.Talosctl`` (its
command line, its error classification). The member list is ``Talosctl.etcd_members`` (one parser, shared with the
three-node restore): ``talosctl etcd members`` asks the node named by ``-n`` for its *local* etcd's member list
(``QueryLocal: true``; machined then calls ``MemberList`` with ``WithRequireLeader``, v1alpha1_server.go:1817-1863 at
v1.13.9), so a member without a leader answers with an error, never with a stale list.

``talosctl etcd remove-member <hex id>`` (etcd.go:169-189) sends ``EtcdRemoveMemberByID``: machined builds an etcd
client to every control-plane node and calls ``MemberRemove`` with ``WithRequireLeader``; an unknown ID is gRPC
``NotFound`` (v1alpha1_server.go:1866-1893).
"""

from __future__ import annotations

import re

from dr.adapters.talosctl import Talosctl
from dr.core.ha_plan import Member

_NOT_FOUND = re.compile(r"code = NotFound|member not found", re.I)


def members(t: Talosctl) -> list[Member]:
    """The member list as the node ``t`` names sees it (its own etcd, with a leader)."""
    return t.etcd_members()


def remove_member(t: Talosctl, member_id: int, timeout: float = 60) -> bool:
    """``etcd remove-member``, asked of the node ``t`` names. True when it removed the member, False when etcd no
    longer knew it (removed already: by an earlier run, or by the joining node's own loop)."""
    proc = t.run(["etcd", "remove-member", f"{member_id:016x}"], what="etcd remove-member", timeout=timeout,
                 check=False)
    if proc.returncode == 0:
        return True
    text = proc.stderr + "\n" + proc.stdout
    if _NOT_FOUND.search(text):
        return False
    raise t.classify(text, f"etcd remove-member {member_id:016x}")
