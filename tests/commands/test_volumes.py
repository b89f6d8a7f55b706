"""dr.volumes against moto's server (EC2): the newest snapshots of each data volume, found by the tag DLM copies."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from dr.adapters import ec2 as ec2_adapter
from dr.commands import volumes
from dr.core import outputs as keys
from dr.core.errors import ExitCode
from dr.core.volume_snapshots import DATA_VOLUME_TAG, MOUNT_TAG, SNAPSHOT_BY_DLM, SNAPSHOT_BY_TAG
from tests.support.tools import run_cli


@pytest.fixture
def ec2(aws_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", aws_env)
    return ec2_adapter.make_client("us-east-1")


def snapshot(ec2, tag: str, name: str, *, dlm: bool = True) -> str:
    vol = ec2.create_volume(AvailabilityZone="us-east-1a", Size=5)["VolumeId"]
    tags = [{"Key": DATA_VOLUME_TAG, "Value": tag}, {"Key": MOUNT_TAG, "Value": f"/var/mnt/{name}"}]
    if dlm:
        tags.append({"Key": SNAPSHOT_BY_TAG, "Value": SNAPSHOT_BY_DLM})
    return ec2.create_snapshot(VolumeId=vol, TagSpecifications=[{"ResourceType": "snapshot", "Tags": tags}])[
        "SnapshotId"]


def test_lists_the_newest_of_each_volume_by_tag(ec2, tmp_path):
    cluster = f"c{uuid.uuid4().hex[:8]}"
    tag = f"prod/{cluster}"
    data = [snapshot(ec2, tag, "data") for _ in range(2)]
    logs = snapshot(ec2, tag, "logs", dlm=False)
    snapshot(ec2, f"staging/{cluster}", "data")  # another stack's: not listed
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({keys.CLUSTER_NAME: cluster, keys.AWS_REGION: "us-east-1"}))
    outputs.chmod(0o600)
    later = lambda: datetime.now(UTC) + timedelta(hours=2)  # noqa: E731
    res = run_cli(volumes.main, "--outputs-file", str(outputs), "--per-volume", "5", now=later)
    assert res.code == 0, res
    lines = res.out.splitlines()
    assert lines[0] == f"Newest EBS snapshots of the data volumes of prod/{cluster}:"
    rows = [ln.split() for ln in lines[2:]]
    assert [(r[0], r[1]) for r in rows if r[0] == "data"] and {r[1] for r in rows if r[0] == "data"} == set(data)
    assert [r for r in rows if r[0] == "logs"][0][1] == logs and rows[-1][-1] == "other"
    assert len(rows) == 3, res.out

    res = run_cli(volumes.main, "--cluster", cluster, "--region", "us-east-1", "--json")
    doc = json.loads(res.out)
    assert res.code == 0 and doc["stack"] == "prod" and len(doc["snapshots"]) == 2  # one per volume
    assert {s["volume"] for s in doc["snapshots"]} == {"data", "logs"}


def test_no_snapshots_is_not_found(ec2):
    res = run_cli(volumes.main, "--cluster", f"none-{uuid.uuid4().hex[:6]}", "--region", "us-east-1")
    assert res.code == ExitCode.NOT_FOUND, res
    assert "no EBS snapshots of the data volumes" in res.err


def test_three_nodes_each_volume_of_a_name_is_listed_apart_by_its_name_tag(ec2):
    """With three control-plane nodes every node has a `data` volume (the same mount tag): each node's newest is
    listed, told apart by the Name tag DLM copies (infra/node.py label); a replaced volume of one node (new volume
    id, same Name tag) stays that node's history."""
    cluster = f"c{uuid.uuid4().hex[:8]}"
    tag = f"prod/{cluster}"

    def snap(name_tag: str) -> str:
        vol = ec2.create_volume(AvailabilityZone="us-east-1a", Size=5)["VolumeId"]
        tags = [{"Key": DATA_VOLUME_TAG, "Value": tag}, {"Key": MOUNT_TAG, "Value": "/var/mnt/data"},
                {"Key": "Name", "Value": name_tag}, {"Key": SNAPSHOT_BY_TAG, "Value": SNAPSHOT_BY_DLM}]
        return ec2.create_snapshot(VolumeId=vol, TagSpecifications=[{"ResourceType": "snapshot", "Tags": tags}])[
            "SnapshotId"]

    ids = {n: snap(n) for n in (f"{cluster}-data", f"{cluster}-data-1", f"{cluster}-data-2")}
    replaced = snap(f"{cluster}-data-1")  # node 1's volume replaced: a new volume, the same Name tag
    res = run_cli(volumes.main, "--cluster", cluster, "--region", "us-east-1", "--json")
    assert res.code == 0, res
    doc = json.loads(res.out)
    assert sorted(s["name_tag"] for s in doc["snapshots"]) == sorted(ids)  # one per node, not one in all
    by_tag = {s["name_tag"]: s["snapshot_id"] for s in doc["snapshots"]}
    assert by_tag[f"{cluster}-data"] == ids[f"{cluster}-data"] and by_tag[f"{cluster}-data-2"] == ids[f"{cluster}-data-2"]
    assert by_tag[f"{cluster}-data-1"] in {replaced, ids[f"{cluster}-data-1"]}
    res = run_cli(volumes.main, "--cluster", cluster, "--region", "us-east-1", "--per-volume", "5")
    rows = [ln.split() for ln in res.out.splitlines()[2:]]
    assert sorted(r[0] for r in rows) == sorted([*ids, f"{cluster}-data-1"]), res.out  # the Name tag, per node
