"""ControlPlaneSize: remembers ``controlPlaneNodes`` in the stack's state and refuses, at preview, to shrink it.

Going from three control-plane nodes to one would make `pulumi up` delete nodes 1 and 2 (instances, addresses,
configuration) without removing them from etcd first: one live member of three has no quorum, and the cluster stops.
The program cannot see its own state, but a resource can: the engine hands a provider's ``check`` the inputs it
recorded last time (``olds``) beside the new ones, and a check failure stops the preview before anything changes
(Pulumi's resource provider protocol, ``CheckRequest.olds``; ``pulumi.dynamic.ResourceProvider.check``). Growing is
an update; nothing in the cloud is created. With data volumes the preview would already fail on their ``protect``,
but not without them.

Serialization (reference/pulumi.md): the provider holds no attributes.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)

RESOURCE_ID = "control-plane-size"


def shrink_problem(old: Any, new: Any) -> str | None:
    """Why going from ``old`` to ``new`` control-plane nodes is refused, or None when it is not a shrink."""
    if isinstance(old, bool) or isinstance(new, bool) or not isinstance(old, int | float) or not isinstance(new, int | float):
        return None
    if new >= old:
        return None
    old, new = int(old), int(new)
    return (f"controlPlaneNodes went from {old} to {new}: `pulumi up` would delete {old - new} control-plane node(s) "
            f"without removing them from etcd, leaving {new} live member(s) of {old}, which has no quorum; shrinking is "
            f"not supported (docs/DEPLOY.md, \"Growing from one node to three\"): set it back with "
            f"`pulumi config set controlPlaneNodes {old}`")


class ControlPlaneSizeProvider(ResourceProvider):
    """See the module docstring. Stateless: pickled by reference."""

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        problem = shrink_problem((olds or {}).get("nodes"), news.get("nodes"))
        return CheckResult(news, [CheckFailure("nodes", problem)] if problem else [])

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return DiffResult(changes=olds.get("nodes") != news.get("nodes"), replaces=[], stables=[],
                          delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=RESOURCE_ID, outs={"nodes": props.get("nodes")})

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs={"nodes": news.get("nodes")})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=dict(props))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


class ControlPlaneSize(pulumi.dynamic.Resource):
    """The stack's ``controlPlaneNodes``, kept in state so a later preview can refuse to shrink it."""

    nodes: pulumi.Output[int]

    def __init__(self, name: str, nodes: int, opts: pulumi.ResourceOptions | None = None):
        super().__init__(ControlPlaneSizeProvider(), name, {"nodes": nodes}, opts)
