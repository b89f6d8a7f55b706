"""BootstrapGeneration: when `pulumi up` may bootstrap etcd again, kept in the stack's state.

The Bootstrap (infra/talos.py) is replaced when its ``replacement_trigger`` changes, and a replaced Bootstrap calls
Talos's Bootstrap on node 0 again, retrying every error but InvalidArgument for up to 10 minutes
(terraform-provider-talos v0.11.0 ``pkg/talos/talos_machine_bootstrap_resource.go``, Create). Talos v1.13.9 accepts
it whenever that node's etcd data directory is still empty (``internal/app/machined/internal/server/v1alpha1/
v1alpha1_server.go``, Bootstrap: AlreadyExists only when it is not), i.e. also on a rebuilt node 0 before its join
loop (``internal/app/machined/pkg/system/services/etcd.go``, addMember) joined it to the other two: a second, empty,
one-member cluster (siderolabs/talos#5500).

So the trigger is this resource's ``generation``, not node 0's instance id:

* **One node**: the generation is the node's instance id; a replaced instance (a blank node) is bootstrapped again,
  as before this resource existed.
* **Three nodes**: the generation is the one recorded when the resource was created (node 0's instance id then, so
  a stack grown from one node keeps its Bootstrap's trigger value) and never changes. A rebuilt node joins the
  others through Talos's join loop; if every node was replaced, nothing is bootstrapped: every node waits for a
  bootstrap and ``talos-dr restore latest`` brings the cluster back from a snapshot with ``bootstrap
  --recover-from`` on exactly one node (docs/RUNBOOK.md). An empty cluster bootstrapped here instead would look
  healthy (quorum intact), and the three-node restore refuses to restore over a cluster with quorum.

The generation is computed in ``check``, which the engine hands the inputs it recorded last time (``olds``,
Pulumi's resource provider protocol ``CheckRequest.olds``) and whose result it records as the new inputs: so it is
known at preview (an update's outputs are not) and compared against what was recorded, not against the program.
An instance id unknown at preview (a replacement) stays unknown (``rpc.UNKNOWN``) where it decides the generation.

Serialization (reference/pulumi.md): the provider holds no attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
from pulumi.dynamic import CheckResult, CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult
from pulumi.runtime.rpc import UNKNOWN

RESOURCE_ID = "bootstrap-generation"
KEYS = ("identities", "generation")


def next_generation(old_generation: Any, old_identities: Any, identities: Any) -> Any:
    """The bootstrap generation for ``identities`` (every node's instance id, node 0 first), given what was recorded
    last time; see the module docstring. ``UNKNOWN`` when it depends on an id not known yet (at preview)."""
    if not isinstance(identities, list) or not identities:
        return UNKNOWN if not isinstance(old_generation, str) else old_generation
    if not isinstance(old_generation, str) or not old_generation:
        return identities[0]  # created: node 0's instance id (the value the trigger had before this resource)
    if len(identities) == 1 and isinstance(old_identities, list) and len(old_identities) == 1:
        return identities[0]  # one node: a new instance is a blank node, bootstrapped again
    return old_generation  # more than one node: never again (a second cluster beside the others)


class BootstrapGenerationProvider(ResourceProvider):
    """See the module docstring. Stateless: pickled by reference."""

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        olds = olds or {}
        generation = next_generation(olds.get("generation"), olds.get("identities"), news.get("identities"))
        return CheckResult({**news, "generation": generation}, [])

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return DiffResult(changes=any(olds.get(k) != news.get(k) for k in KEYS), replaces=[], stables=[],
                          delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=RESOURCE_ID, outs={k: props.get(k) for k in KEYS})

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs={k: news.get(k) for k in KEYS})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=dict(props))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


class BootstrapGeneration(pulumi.dynamic.Resource):
    """The value of the Bootstrap's ``replacement_trigger``: see the module docstring."""

    generation: pulumi.Output[str]

    def __init__(self, name: str, identities: Sequence[pulumi.Input[str]], opts: pulumi.ResourceOptions | None = None):
        super().__init__(BootstrapGenerationProvider(), name, {"identities": list(identities), "generation": None},
                         opts)
