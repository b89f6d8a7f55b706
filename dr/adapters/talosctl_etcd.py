"""talosctl's etcd membership commands, over ``dr.adapters.talosctl.Talosctl`` (its command line, its error
classification): ``etcd members`` parsed into ``dr.core.member_repair.Member``, and ``etcd remove-member``.

``talosctl etcd members`` (cmd/talosctl/cmd/talos/etcd.go:205-262 at v1.13.9) asks the node named by ``-n`` for its
*local* etcd's member list (``QueryLocal: true``; machined then calls ``MemberList`` with ``WithRequireLeader``,
v1alpha1_server.go:1817-1863): a member without a leader answers with an error, never with a stale list. It prints a
tabwriter table (padding 3): ``NODE`` first when the reply carries a hostname (apid adds it to a forwarded call),
then ``ID`` (``%016x``), ``HOSTNAME``, ``PEER URLS`` and ``CLIENT URLS`` (comma-joined), ``LEARNER`` (``true``/
``false``). A member added but not started has no name and no client URLs: its cells are empty, so rows are cut at
the header's column offsets, not split on spaces (tests/golden/talosctl/etcd-members-*.txt).

``talosctl etcd remove-member <hex id>`` (etcd.go:169-189) sends ``EtcdRemoveMemberByID``: machined builds an etcd
client to every control-plane node and calls ``MemberRemove`` with ``WithRequireLeader``; an unknown ID is gRPC
``NotFound`` (v1alpha1_server.go:1866-1893).
"""

from __future__ import annotations

import re

from dr.adapters.talosctl import Talosctl
from dr.core.errors import NodeError
from dr.core.member_repair import Member

_COLUMNS = ("ID", "HOSTNAME", "PEER URLS", "CLIENT URLS", "LEARNER")
_NOT_FOUND = re.compile(r"code = NotFound|member not found", re.I)


def parse_members(stdout: str) -> list[Member]:
    """The members in ``talosctl etcd members`` output; [] when it printed none. A table without the expected header
    is a NodeError (another talosctl version's format)."""
    lines = [ln.rstrip("\n") for ln in stdout.splitlines() if ln.strip()]
    if not lines:
        return []
    header = lines[0]
    starts = []
    for col in _COLUMNS:
        m = re.search(rf"(?:^|\s){re.escape(col)}(?:\s|$)", header)
        if m is None:
            raise NodeError(f"`talosctl etcd members` printed a table without a {col} column: {header.strip()!r}",
                            "use the talosctl version of the cluster (stack output talosVersion)")
        starts.append(m.start() + (1 if header[m.start()].isspace() else 0))
    members = []
    for row in lines[1:]:
        cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], len(row) + 1], strict=True)]
        ident, name, peers, clients, learner = cells
        try:
            member_id = int(ident, 16)
        except ValueError:
            raise NodeError(f"`talosctl etcd members` printed a row without a member ID: {row.strip()!r}",
                            "use the talosctl version of the cluster (stack output talosVersion)") from None
        members.append(Member(member_id, name, tuple(u for u in peers.split(",") if u),
                              tuple(u for u in clients.split(",") if u), learner.lower() == "true"))
    return members


def members(t: Talosctl, timeout: float = 30) -> list[Member]:
    """The member list as the node ``t`` names sees it (its own etcd, with a leader)."""
    proc = t.run(["etcd", "members"], what="etcd members", timeout=timeout)
    return parse_members(proc.stdout)


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
