"""The recovery kit and `talos-dr rebuild` of a three-node stack, under Pulumi's mocks: the kit lists every node's data
volume with its node and zone; the rebuild plan imports each under the URN the program registers; a lost volume's
snapshot is pinned for its node only (``nodeDataVolumeSnapshots``), and the program honours it."""

from __future__ import annotations

import json

import pytest
from pyrage import x25519

from dr.core import recovery_kit as kits
from dr.core.rebuild_plan import NODE_SNAPSHOTS_KEY, VOLUME_TYPE, VolumeFacts, components, import_file, plan
from infra.config import ConfigValidationError, validate_config
from tests.infra.mocks import run_program, stack_file_config
from tests.infra.test_rebuild_urns import engine_urn
from tests.infra.test_recovery_kit import the_kit

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ZONES = ["us-east-1a", "us-east-1b", "us-east-1c"]
NODES = ["talos-dr", "talos-dr-cp1", "talos-dr-cp2"]
VOLUMES = ["talos-dr-data-data", "talos-dr-cp1-data-data", "talos-dr-cp2-data-data"]
SNAP = "snap-0123456789abcdef1"


@pytest.fixture(scope="module")
def identity():
    return x25519.Identity.generate()


def config(identity, **extra):
    return {**stack_file_config(), "talos-dr:controlPlaneNodes": "3",
            "talos-dr:ageRecipients": json.dumps([str(identity.to_public())]), **extra}


@pytest.fixture(scope="module")
def three(identity):
    return run_program(config(identity))


def test_the_kit_of_three_nodes_lists_every_nodes_volume_with_its_node_and_zone(three, identity):
    _obj, ciphertext = the_kit(three)
    kit = kits.unseal(ciphertext, [identity])
    res = three.mocks.resources
    assert kit.per_node and json.loads(kits.encode(kit))["version"] == kits.KIT_VERSION_NODES
    assert list(kit.data_volumes) == [
        {"name": "data", "id": res[v].id, "node": i, "nodeName": n, "availabilityZone": z}
        for i, (v, n, z) in enumerate(zip(VOLUMES, NODES, ZONES, strict=True))]
    assert len({v["id"] for v in kit.data_volumes}) == 3
    # Each volume is in its node's zone, and the node names are controlPlaneNodes'.
    assert [res[v].inputs["availabilityZone"] for v in VOLUMES] == ZONES
    assert [n["name"] for n in three.outputs["controlPlaneNodes"]] == NODES


def test_a_one_node_kit_is_written_as_before(identity):
    run = run_program({**stack_file_config(), "talos-dr:ageRecipients": json.dumps([str(identity.to_public())])})
    _obj, ciphertext = the_kit(run)
    kit = kits.unseal(ciphertext, [identity])
    assert not kit.per_node and json.loads(kits.encode(kit))["version"] == kits.KIT_VERSION == 1
    assert list(kit.data_volumes) == [{"name": "data", "id": run.one(VOLUME_TYPE).id}]


def test_rebuild_imports_each_surviving_volume_under_the_programs_urn(three, identity):
    _obj, ciphertext = the_kit(three)
    kit = kits.unseal(ciphertext, [identity])
    res = three.mocks.resources
    lost = res[VOLUMES[1]].id
    p = plan(kit, bucket=kit.bucket, secrets_file="/tmp/secrets.yaml",
             volumes={v["id"]: VolumeFacts(v["id"], "available") for v in kit.data_volumes if v["id"] != lost},
             newest_snapshots={lost: SNAP})
    imported = {i.urn(p.stack, p.project, p.cluster): i.id for i in p.imports if i.type == VOLUME_TYPE}
    assert imported == {engine_urn(three.urn(VOLUMES[0])): res[VOLUMES[0]].id,
                        engine_urn(three.urn(VOLUMES[2])): res[VOLUMES[2]].id}
    # Each node's component, the parent the import file names, is the one the program hangs the volume under.
    for i, ref in ((1, "node-cp1"), (2, "node-cp2")):
        typ, name = components(p.cluster, 3)[ref]
        assert engine_urn(three.options(VOLUMES[i])["parent"]) == f"urn:pulumi:prod::talos-dr::{typ}::{name}", ref
    doc = import_file(p)
    assert {r["name"] for r in doc["resources"] if r.get("component")} == {"node", "node-cp2", "bucket", "talos"}
    assert json.loads(p.config[NODE_SNAPSHOTS_KEY][0]) == {"1": {"data": SNAP}}
    # The new stack's settings, as `pulumi up` would see them, pass validation and pin node 1's volume only.
    settings = {k: v for k, (v, _secret) in p.config.items()}
    run = run_program(settings)
    snapshot_ids = {v: run.mocks.resources[v].inputs.get("snapshotId") for v in VOLUMES}
    assert snapshot_ids == {VOLUMES[0]: None, VOLUMES[1]: SNAP, VOLUMES[2]: None}


def test_node_snapshots_override_data_volumes_for_that_node_only(identity):
    shared = json.dumps([{"name": "data", "size": 20, "device": "/dev/sdf", "snapshotId": "snap-0000000000000000a"}])
    run = run_program(config(identity, **{"talos-dr:dataVolumes": shared,
                                          NODE_SNAPSHOTS_KEY: json.dumps({"2": {"data": SNAP}})}))
    snapshot_ids = [run.mocks.resources[v].inputs.get("snapshotId") for v in VOLUMES]
    assert snapshot_ids == ["snap-0000000000000000a", "snap-0000000000000000a", SNAP]


MINIMAL = {"aws:region": "us-east-1", "adminCidrs": '["203.0.113.7/32"]', "controlPlaneNodes": "3",
           "dataVolumes": '[{"name": "etcd", "size": 10, "device": "/dev/sdf"}]'}


@pytest.mark.parametrize(("value", "key", "says"), [
    ('{"3": {"etcd": "snap-0123456789abcdef1"}}', "nodeDataVolumeSnapshots.3", "use 0 to 2"),
    ('{"cp1": {"etcd": "snap-0123456789abcdef1"}}', "nodeDataVolumeSnapshots.cp1", "not a node index"),
    ('{"1": {"logs": "snap-0123456789abcdef1"}}', "nodeDataVolumeSnapshots.1.logs", "no data volume named 'logs'"),
    ('{"1": {"etcd": "vol-1"}}', "nodeDataVolumeSnapshots.1.etcd", "not an EBS snapshot id"),
    ('{"1": "snap-0123456789abcdef1"}', "nodeDataVolumeSnapshots.1", "must be an object"),
    ('["snap-0123456789abcdef1"]', "nodeDataVolumeSnapshots", "must be an object"),
])
def test_node_snapshots_are_checked(value, key, says):
    with pytest.raises(ConfigValidationError) as info:
        validate_config({**MINIMAL, "nodeDataVolumeSnapshots": value})
    assert info.value.keys == [key] and says in str(info.value), info.value


def test_node_snapshots_on_one_node_name_node_0_only():
    cfg = validate_config({**MINIMAL, "controlPlaneNodes": "1",
                           "nodeDataVolumeSnapshots": '{"0": {"etcd": "snap-0123456789abcdef1"}}'})
    assert cfg.node_data_volumes(0)[0].snapshot_id == "snap-0123456789abcdef1"
    assert cfg.data_volumes[0].snapshot_id is None
    with pytest.raises(ConfigValidationError, match="use 0 to 0"):
        validate_config({**MINIMAL, "controlPlaneNodes": "1",
                         "nodeDataVolumeSnapshots": '{"1": {"etcd": "snap-0123456789abcdef1"}}'})
