"""BootstrapGeneration: one node is bootstrapped again after its instance is replaced; three nodes never are.

The provider is driven as the engine drives it on every `pulumi up`: ``check`` with the inputs it recorded last
time, then ``diff`` against the recorded outputs, then ``update`` when the diff reports a change (a no-change diff
records the checked inputs as they are). The Bootstrap's ``replacement_trigger`` is the resulting ``generation``.
"""

from __future__ import annotations

import dill
import pytest
from pulumi.runtime.rpc import UNKNOWN

from infra.providers.bootstrap_generation import BootstrapGenerationProvider, next_generation
from tests.infra.mocks import run_program, stack_file_config

P = BootstrapGenerationProvider()


def up(state: dict | None, identities: list[str]) -> tuple[dict, bool]:
    """One `pulumi up` of the resource: its recorded state after it, and whether it was written (create/update)."""
    program = {"identities": identities}
    if state is None:
        checked = P.check({}, program).inputs
        return {"inputs": checked, "outputs": P.create(checked).outs}, True
    checked = P.check(state["inputs"], program).inputs
    if not P.diff("bootstrap-generation", state["outputs"], checked).changes:
        return {"inputs": checked, "outputs": state["outputs"]}, False
    return {"inputs": checked, "outputs": P.update("bootstrap-generation", state["outputs"], checked).outs}, True


def generation(state: dict) -> str:
    return state["outputs"]["generation"]


def test_one_node_is_bootstrapped_again_after_its_instance_is_replaced():
    state, _ = up(None, ["i-a"])
    assert generation(state) == "i-a"  # the value the trigger had before this resource: node 0's instance id
    state, written = up(state, ["i-a"])
    assert (generation(state), written) == ("i-a", False)
    state, _ = up(state, ["i-b"])
    assert generation(state) == "i-b"
    state, _ = up(state, ["i-c"])
    assert generation(state) == "i-c"


@pytest.mark.parametrize("replaced", [[0], [1], [2], [0, 1], [1, 2], [0, 2], [0, 1, 2]])
def test_three_nodes_keep_their_generation_whatever_is_replaced(replaced):
    state, _ = up(None, ["i-a", "i-b", "i-c"])
    assert generation(state) == "i-a"
    ids = ["i-a", "i-b", "i-c"]
    for i in replaced:
        ids[i] = f"i-new{i}"
    state, written = up(state, ids)
    assert written, "the new ids are recorded"
    assert generation(state) == "i-a", "never a second bootstrap beside the others (siderolabs/talos#5500)"
    assert state["outputs"]["identities"] == ids


def test_three_nodes_replaced_one_at_a_time_never_change_the_generation():
    state, _ = up(None, ["i-a", "i-b", "i-c"])
    ids = ["i-a", "i-b", "i-c"]
    for i in (0, 1, 2, 0):
        ids[i] += "x"
        state, _ = up(state, list(ids))
        assert generation(state) == "i-a"


@pytest.mark.parametrize("grown", [["i-a", "i-b", "i-c"], ["i-new", "i-b", "i-c"]])
def test_growing_to_three_keeps_node_0s_id_even_when_node_0_is_replaced_in_the_same_up(grown):
    state, _ = up(None, ["i-a"])
    state, written = up(state, grown)
    assert written and generation(state) == "i-a"
    state, _ = up(state, ["i-x", "i-y", "i-z"])
    assert generation(state) == "i-a"


def test_at_preview_an_unknown_id_leaves_the_generation_unknown_only_where_it_decides_it():
    one, _ = up(None, ["i-a"])
    assert P.check(one["inputs"], {"identities": [UNKNOWN]}).inputs["generation"] == UNKNOWN
    three, _ = up(None, ["i-a", "i-b", "i-c"])
    for ids in ([UNKNOWN, "i-b", "i-c"], [UNKNOWN, UNKNOWN, UNKNOWN], UNKNOWN):
        assert P.check(three["inputs"], {"identities": ids}).inputs["generation"] == "i-a"
    assert next_generation(None, None, UNKNOWN) == UNKNOWN
    assert next_generation(None, None, [UNKNOWN, "i-b", "i-c"]) == UNKNOWN  # created at preview, node 0 new


def test_refresh_keeps_what_was_recorded():
    state, _ = up(None, ["i-a", "i-b", "i-c"])
    assert P.read("bootstrap-generation", dict(state["outputs"])).outs == state["outputs"]


def test_the_provider_pickles_by_reference():
    assert isinstance(dill.loads(dill.dumps(P)), BootstrapGenerationProvider)
    assert vars(P) == {}


def test_wiring_the_bootstrap_is_triggered_by_the_generation_of_every_nodes_id():
    three = run_program({**stack_file_config(), "talos-dr:controlPlaneNodes": "3"})
    res = three.mocks.resources
    (gen,) = three.dynamic("generation")
    ids = [res[n].id for n in ("talos-dr-instance", "talos-dr-cp1-instance", "talos-dr-cp2-instance")]
    assert gen.inputs["identities"] == ids
    assert three.options("talos-dr-bootstrap")["replacement_trigger"] == ids[0]
    assert three.options("talos-dr-bootstrap-generation")["parent"] == three.options("talos-dr-bootstrap")["parent"]
