"""The cluster's control-plane nodes, as the stack names them (stack output ``controlPlaneNodes``).

Pure: takes the outputs' values, returns :class:`ClusterNode` records. A stack from before the output existed (one
node) is read from the single-node outputs, so every DR command sees a list either way. The bootstrap node is first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dr.core import outputs as keys
from dr.core.errors import ConfigError

# What `controlPlaneNodes` may be: one node, or three (etcd needs a majority; two nodes tolerate no loss).
ALLOWED_COUNTS = (1, 3)


@dataclass(frozen=True)
class ClusterNode:
    """One control-plane node: ``private_ip`` is what every Talos call names (``--nodes``), ``public_ip`` (its Elastic
    IP) what the operator's machine dials (``--endpoints``)."""

    name: str
    private_ip: str
    public_ip: str
    instance_id: str = ""
    availability_zone: str = ""

    def to_output(self) -> dict[str, str]:
        return {"name": self.name, "privateIp": self.private_ip, "publicIp": self.public_ip,
                "instanceId": self.instance_id, "availabilityZone": self.availability_zone}


def _one(raw: Any, at: int) -> ClusterNode:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"stack output {keys.CONTROL_PLANE_NODES!r} entry {at} is not an object",
                          "run `pulumi up` so the stack exports it again")
    private, public = raw.get("privateIp"), raw.get("publicIp")
    if not private or not public:
        raise ConfigError(f"stack output {keys.CONTROL_PLANE_NODES!r} entry {at} lacks privateIp or publicIp",
                          "run `pulumi up` so the stack exports it again")
    return ClusterNode(name=str(raw.get("name") or f"node-{at}"), private_ip=str(private), public_ip=str(public),
                       instance_id=str(raw.get("instanceId") or ""),
                       availability_zone=str(raw.get("availabilityZone") or ""))


def from_outputs(values: Mapping[str, Any]) -> list[ClusterNode]:
    """Every control-plane node the outputs name, bootstrap node first; [] when they name none."""
    listed = values.get(keys.CONTROL_PLANE_NODES)
    if listed:
        if not isinstance(listed, Sequence) or isinstance(listed, (str, bytes)):
            raise ConfigError(f"stack output {keys.CONTROL_PLANE_NODES!r} is not a list",
                              "run `pulumi up` so the stack exports it again")
        nodes = [_one(raw, i) for i, raw in enumerate(listed)]
        seen: set[str] = set()
        for n in nodes:
            if n.private_ip in seen:
                raise ConfigError(f"stack output {keys.CONTROL_PLANE_NODES!r} names {n.private_ip} twice",
                                  "run `pulumi up` so the stack exports it again")
            seen.add(n.private_ip)
        return nodes
    private = values.get(keys.NODE_PRIVATE_IP)
    if not private:
        return []
    return [ClusterNode(name=str(values.get(keys.CLUSTER_NAME) or "node-0"), private_ip=str(private),
                        public_ip=str(values.get(keys.NODE_PUBLIC_IP) or private),
                        instance_id=str(values.get(keys.NODE_INSTANCE_ID) or ""))]


def quorum(members: int) -> int:
    """etcd's quorum: a majority of the voting members (etcd raft: (n/2)+1)."""
    return members // 2 + 1
