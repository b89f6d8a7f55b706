"""The rebuild plan (pure) for a kit of three control-plane nodes: each node's data volume imported under the name the
program gives it (tests/infra/test_rebuild_urns.py checks those against the program), a lost one pinned for its node
only (``nodeDataVolumeSnapshots``; ``dataVolumes`` is every node's), and a one-node kit planned exactly as before."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from dr.core import recovery_kit as kits
from dr.core.rebuild_plan import NODE_SNAPSHOTS_KEY, VOLUME_TYPE, VolumeFacts, components, import_file, plan
from dr.core.volume_snapshots import MOUNT_TAG, VolumeSnapshot, newest_completed, newest_completed_of

B64 = "LS0tLS1CRUdJTiBQRU0tLS0tCngKLS0tLS1FTkQgUEVNLS0tLS0K"
BUNDLE = {
    "cluster": {"id": "cid=", "secret": "csecret="},
    "secrets": {"bootstraptoken": "abcdef.0123456789abcdef", "secretboxencryptionsecret": "sbox="},
    "trustdinfo": {"token": "ghijkl.0123456789abcdef"},
    "certs": {"etcd": {"crt": B64, "key": B64}, "k8s": {"crt": B64, "key": B64},
              "k8saggregator": {"crt": B64, "key": B64}, "k8sserviceaccount": {"key": B64},
              "os": {"crt": B64, "key": B64}},
}
VOLS = ["vol-00000000000000000", "vol-11111111111111111", "vol-22222222222222222"]
ZONES = ["us-east-1a", "us-east-1b", "us-east-1c"]
DATA_VOLUMES = json.dumps([{"name": "etcd", "size": 10, "device": "/dev/sdf"}])
S = "urn:pulumi:prod::talos-dr::"


def three_node_kit(**config) -> kits.Kit:
    return kits.Kit(
        project="talos-dr", stack="prod", cluster_name="c", region="us-east-1", bucket="b",
        secrets_bundle=kits.bundle_yaml(BUNDLE),
        config={"talos-dr:controlPlaneNodes": "3", "talos-dr:dataVolumes": DATA_VOLUMES, **config},
        data_volumes=tuple({"name": "etcd", "id": v, "node": i, "nodeName": "c" if i == 0 else f"c-cp{i}",
                            "availabilityZone": z} for i, (v, z) in enumerate(zip(VOLS, ZONES, strict=True))))


def test_three_volumes_one_lost_imports_two_and_pins_the_lost_one_for_its_node_only():
    kit = three_node_kit()
    p = plan(kit, bucket="b", secrets_file="/tmp/s.yaml",
             volumes={VOLS[0]: VolumeFacts(VOLS[0], "available"), VOLS[2]: VolumeFacts(VOLS[2], "available")},
             newest_snapshots={VOLS[1]: "snap-0123456789abcdef1"})
    volumes = {i.logical_name: (i.id, i.parent) for i in p.imports if i.type == VOLUME_TYPE}
    assert volumes == {"c-data-etcd": (VOLS[0], "node"), "c-cp2-data-etcd": (VOLS[2], "node-cp2")}
    urns = {i.urn(p.stack, p.project, p.cluster) for i in p.imports if i.type == VOLUME_TYPE}
    assert urns == {f"{S}talos-dr:node:Node$aws:ebs/volume:Volume::c-data-etcd",
                    f"{S}talos-dr:node:Node$aws:ebs/volume:Volume::c-cp2-data-etcd"}
    # The lost volume: node 1 only. dataVolumes (every node's) is left as the kit had it.
    assert json.loads(p.config[NODE_SNAPSHOTS_KEY][0]) == {"1": {"etcd": "snap-0123456789abcdef1"}}
    assert p.config["talos-dr:dataVolumes"] == (DATA_VOLUMES, False)
    assert any("node c-cp1 (us-east-1b)" in n and "snap-0123456789abcdef1" in n for n in p.notes)
    assert p.nodes == 3 and len(p.node_lines) == 3
    assert p.node_lines[1] == (f"data volume etcd of node c-cp1 (us-east-1b): {VOLS[1]} lost; created from "
                               "snapshot snap-0123456789abcdef1")
    assert p.node_lines[2].endswith("available; imported")
    # The import file creates the components the volumes hang under (node 1's is not needed).
    doc = import_file(p)
    comps = {r["name"]: r["logicalName"] for r in doc["resources"] if r.get("component")}
    assert comps == {"node": "c", "node-cp2": "c-cp2", "bucket": "c-etcd-backups", "talos": "c"}
    assert {r["name"]: r["parent"] for r in doc["resources"] if r.get("type") == VOLUME_TYPE} == {
        "data-etcd": "node", "data-etcd-cp2": "node-cp2"}


def test_a_lost_volume_without_a_snapshot_is_created_empty_and_nothing_is_pinned():
    p = plan(three_node_kit(), bucket="b", secrets_file="/s", volumes={}, newest_snapshots={})
    assert not [i for i in p.imports if i.type == VOLUME_TYPE]
    assert NODE_SNAPSHOTS_KEY not in p.config
    assert sum("has no snapshot" in n for n in p.notes) == 3


def test_a_pin_the_kit_already_had_is_kept_beside_the_new_one():
    kit = three_node_kit(**{NODE_SNAPSHOTS_KEY: json.dumps({"2": {"etcd": "snap-0000000000000000a"}})})
    p = plan(kit, bucket="b", secrets_file="/s", volumes={VOLS[2]: VolumeFacts(VOLS[2], "in-use", ())},
             newest_snapshots={VOLS[0]: "snap-0000000000000000b"})
    assert json.loads(p.config[NODE_SNAPSHOTS_KEY][0]) == {"0": {"etcd": "snap-0000000000000000b"},
                                                          "2": {"etcd": "snap-0000000000000000a"}}


def test_a_rerun_knows_every_nodes_component_and_refuses_nothing_of_its_own():
    kit = three_node_kit()
    state = [f"{S}talos-dr:node:Node::c-cp1", f"{S}talos-dr:node:Node$aws:ebs/volume:Volume::c-cp1-data-etcd"]
    p = plan(kit, bucket="b", secrets_file="/s", volumes={v: VolumeFacts(v, "available") for v in VOLS},
             newest_snapshots={}, state_urns=state)
    assert not p.blockers
    assert p.existing_components == {"node-cp1": f"{S}talos-dr:node:Node::c-cp1"}
    assert any("node c-cp1" in s for s in p.skipped)
    assert components("c", 3)["node-cp2"] == ("talos-dr:node:Node", "c-cp2")
    assert set(components("c")) == {"node", "bucket", "talos", "schedule"}


def test_a_one_node_kit_is_planned_as_before():
    kit = kits.Kit(project="talos-dr", stack="prod", cluster_name="c", region="us-east-1", bucket="b",
                   secrets_bundle=kits.bundle_yaml(BUNDLE), config={"talos-dr:dataVolumes": DATA_VOLUMES},
                   data_volumes=({"name": "etcd", "id": VOLS[0]},))
    assert not kit.per_node and kit.to_document()["version"] == kits.KIT_VERSION == 1
    p = plan(kit, bucket="b", secrets_file="/s", volumes={}, newest_snapshots={"etcd": "snap-0123456789abcdef0"})
    assert json.loads(p.config["talos-dr:dataVolumes"][0])[0]["snapshotId"] == "snap-0123456789abcdef0"
    assert NODE_SNAPSHOTS_KEY not in p.config and p.nodes == 1
    assert "data volume etcd (vol-00000000000000000) is gone: `pulumi up` creates it from its newest snapshot " \
           "snap-0123456789abcdef0" in p.notes


def test_kit_versions_round_trip_and_a_v2_volume_must_name_its_node():
    kit = three_node_kit()
    doc = json.loads(kits.encode(kit))
    assert doc["version"] == kits.KIT_VERSION_NODES
    assert kits.decode(kits.encode(kit)).data_volumes == kit.data_volumes
    del doc["dataVolumes"][1]["node"]
    with pytest.raises(kits.KitError, match="does not say which node"):
        kits.decode(json.dumps(doc).encode())
    doc["dataVolumes"][1]["node"] = 0  # node 0 twice with one name
    with pytest.raises(kits.KitError, match="twice for one node"):
        kits.decode(json.dumps(doc).encode())
    # A version 1 kit with extra fields reads as today: name and id only.
    doc["version"] = 1
    assert kits.decode(json.dumps(doc).encode()).data_volumes[1] == {"name": "etcd", "id": VOLS[1]}
    doc["version"] = 3
    with pytest.raises(kits.KitError, match="kit version 3"):
        kits.decode(json.dumps(doc).encode())


def _snap(sid: str, vol: str, day: int, name: str, state: str = "completed") -> VolumeSnapshot:
    return VolumeSnapshot(sid, vol, datetime(2026, 12, day, tzinfo=UTC), state, 10,
                          {MOUNT_TAG: "/var/mnt/etcd", "Name": name})


def test_a_nodes_newest_snapshot_is_of_its_own_volume():
    snaps = [_snap("snap-own-old", VOLS[1], 1, "c-etcd-1"), _snap("snap-own", VOLS[1], 3, "c-etcd-1"),
             _snap("snap-own-pending", VOLS[1], 6, "c-etcd-1", "pending"),
             _snap("snap-node0-newer", VOLS[0], 5, "c-etcd"), _snap("snap-old-volume", "vol-gone", 4, "c-etcd-2")]
    assert newest_completed(snaps, "etcd").snapshot_id == "snap-node0-newer", "by name, any node's would do"
    assert newest_completed_of(snaps, VOLS[1], "c-etcd-1").snapshot_id == "snap-own"
    # Node 2's volume has none of its own (it replaced one that had): its Name tag finds the earlier volume's.
    assert newest_completed_of(snaps, VOLS[2], "c-etcd-2").snapshot_id == "snap-old-volume"
    assert newest_completed_of(snaps, VOLS[2]) is None


def test_an_older_kit_of_three_nodes_naming_node_0s_volumes_only_pins_node_0_and_says_what_is_missing():
    kit = kits.Kit(project="talos-dr", stack="prod", cluster_name="c", region="us-east-1", bucket="b",
                   secrets_bundle=kits.bundle_yaml(BUNDLE),
                   config={"talos-dr:dataVolumes": DATA_VOLUMES, "talos-dr:controlPlaneNodes": "3"},
                   data_volumes=({"name": "etcd", "id": VOLS[0]},))
    p = plan(kit, bucket="b", secrets_file="/s", volumes={}, newest_snapshots={"etcd": "snap-0123456789abcdef0"})
    assert json.loads(p.config[NODE_SNAPSHOTS_KEY][0]) == {"0": {"etcd": "snap-0123456789abcdef0"}}
    assert p.config["talos-dr:dataVolumes"] == (DATA_VOLUMES, False), "not every node's volume from node 0's data"
    assert any("the other 2 nodes' volumes are not imported" in n for n in p.notes)
