"""dr.rebuild end to end: a kit in a real S3 protocol server (moto's server mode, EC2 too), an identity from the real
age-keygen, and the fake `pulumi` (tests/support/fake_pulumi.py), whose argv, stdin and resulting state are asserted."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest
from pyrage import x25519

from dr.adapters import ec2 as ec2_adapter
from dr.commands import rebuild
from dr.core import recovery_kit as kits
from dr.core.errors import ExitCode
from dr.core.volume_snapshots import DATA_VOLUME_TAG, MOUNT_TAG, SNAPSHOT_BY_DLM, SNAPSHOT_BY_TAG
from tests.support import fake_pulumi
from tests.support.snapshots import age_keygen
from tests.support.tools import run_cli

B64 = base64.b64encode(b"-----BEGIN PEM-----\nx\n-----END PEM-----\n").decode()
BUNDLE = {
    "cluster": {"id": "cid=", "secret": "csecret="},
    "secrets": {"bootstraptoken": "abcdef.0123456789abcdef", "secretboxencryptionsecret": "sbox="},
    "trustdinfo": {"token": "ghijkl.0123456789abcdef"},
    "certs": {"etcd": {"crt": B64, "key": B64}, "k8s": {"crt": B64, "key": B64},
              "k8saggregator": {"crt": B64, "key": B64}, "k8sserviceaccount": {"key": B64},
              "os": {"crt": B64, "key": B64}},
}
SECRET_VALUE = '{"argocd/repo-creds": {"password": "hunter2-not-on-argv"}}'


@pytest.fixture
def world(aws_env, monkeypatch, tmp_path, s3_client, bucket):
    """A bucket with a kit, one surviving data volume and one lost one (with a DLM snapshot), a checkout, a key."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", aws_env)
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", aws_env)
    cluster = f"c{uuid.uuid4().hex[:8]}"
    ec2 = ec2_adapter.make_client("us-east-1")
    tag = f"prod/{cluster}"
    kept = ec2.create_volume(AvailabilityZone="us-east-1a", Size=20, TagSpecifications=[
        {"ResourceType": "volume", "Tags": [{"Key": DATA_VOLUME_TAG, "Value": tag}]}])["VolumeId"]
    gone = ec2.create_volume(AvailabilityZone="us-east-1a", Size=10, TagSpecifications=[
        {"ResourceType": "volume", "Tags": [{"Key": DATA_VOLUME_TAG, "Value": tag}]}])["VolumeId"]
    snap = ec2.create_snapshot(VolumeId=gone, TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
        {"Key": DATA_VOLUME_TAG, "Value": tag}, {"Key": MOUNT_TAG, "Value": "/var/mnt/logs"},
        {"Key": SNAPSHOT_BY_TAG, "Value": SNAPSHOT_BY_DLM}]}])["SnapshotId"]
    ec2.delete_volume(VolumeId=gone)
    volumes = [{"name": "data", "size": 20, "device": "/dev/sdf"}, {"name": "logs", "size": 10, "device": "/dev/sdg"}]
    key = age_keygen(tmp_path)
    kit = kits.Kit(project="talos-dr", stack="prod", cluster_name=cluster, region="us-east-1", bucket=bucket,
                   secrets_bundle=kits.bundle_yaml(BUNDLE),
                   config={"aws:region": "us-east-1", "talos-dr:clusterName": cluster,
                           "talos-dr:adminCidrs": '["203.0.113.7/32"]', "talos-dr:dataVolumes": json.dumps(volumes)},
                   secret_config={"talos-dr:kubernetesSecrets": SECRET_VALUE},
                   outputs={"etcdBackupBucketName": bucket, "clusterName": cluster},
                   data_volumes=({"name": "data", "id": kept}, {"name": "logs", "id": gone}))
    sealed = kits.seal(kit, [x25519.Recipient.from_str(key.recipient)])
    s3_client.put_object(Bucket=bucket, Key=kits.kit_key(cluster), Body=sealed)
    project = tmp_path / "checkout"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: talos-dr\nruntime: python\n")
    fake = fake_pulumi.install(tmp_path, monkeypatch)
    return {"bucket": bucket, "cluster": cluster, "kept": kept, "gone": gone, "snap": snap, "key": key,
            "project": project, "fake": fake, "kit": kit, "ec2": ec2}


def rebuild_cli(w, *extra):
    return run_cli(rebuild.main, "--identity", str(w["key"].identity_file), "--bucket", w["bucket"],
                   "--project-dir", str(w["project"]), *extra)


def test_rebuild_creates_the_stack_sets_config_and_imports(world):
    w, fake = world, world["fake"]
    res = rebuild_cli(w)
    assert res.code == 0, res
    cluster = w["cluster"]
    argv = [[a for a in c if a != "--non-interactive"] for c in fake.argv()]
    assert argv[0] == ["version"]
    assert argv[1] == ["stack", "init", "prod"]
    assert argv[2] == ["stack", "export", "--show-secrets", "--stack", "prod"]
    sets = [a for a in argv if a[:2] == ["config", "set"]]
    keys = {a[-1]: "--secret" in a for a in sets}
    assert keys == {"aws:region": False, "talos-dr:clusterName": False, "talos-dr:adminCidrs": False,
                    "talos-dr:dataVolumes": False, "talos-dr:bucketName": False, "talos-dr:kubernetesSecrets": True}
    assert all(a[:4] == ["config", "set", "--stack", "prod"] for a in sets)
    (imp,) = [a for a in argv if a[:1] == ["import"]]
    assert imp[:3] == ["import", "--yes", "--skip-preview"] and "--protect=true" in imp
    assert "--generate-code=false" in imp and imp[-2:] == ["--stack", "prod"]
    assert argv.index(imp) > max(argv.index(a) for a in sets), "settings first: the import needs aws:region"
    # No secret on any command line; it went in on stdin.
    assert not any("hunter2" in " ".join(c["argv"]) for c in fake.calls())
    (secret_call,) = [c for c in fake.calls() if "talos-dr:kubernetesSecrets" in c["argv"]]
    assert secret_call["stdin"] == SECRET_VALUE
    assert all(c["cwd"] == str(w["project"]) for c in fake.calls()[1:]), "every stack command runs in the checkout"

    state = fake.state("prod")
    assert state["config"]["talos-dr:bucketName"] == [w["bucket"], False]
    restored = json.loads(state["config"]["talos-dr:dataVolumes"][0])
    assert restored[1] == {"name": "logs", "size": 10, "device": "/dev/sdg", "snapshotId": w["snap"]}
    assert "snapshotId" not in restored[0]
    urns = {r["urn"]: r for r in state["resources"]}
    s = "urn:pulumi:prod::talos-dr::"
    assert set(urns) == {
        f"{s}talos-dr:bucket:BackupBucket::{cluster}-etcd-backups",
        f"{s}talos-dr:node:Node::{cluster}",
        f"{s}talos-dr:talos:TalosCluster::{cluster}",
        f"{s}talos-dr:bucket:BackupBucket$aws:s3/bucket:Bucket::{cluster}-etcd-backups",
        f"{s}talos-dr:node:Node$aws:ebs/volume:Volume::{cluster}-data-data",
        f"{s}talos-dr:talos:TalosCluster$talos:machine/secrets:Secrets::{cluster}-secrets",
    }
    bucket = urns[f"{s}talos-dr:bucket:BackupBucket$aws:s3/bucket:Bucket::{cluster}-etcd-backups"]
    assert bucket["id"] == w["bucket"] and bucket["protect"] is True
    volume = urns[f"{s}talos-dr:node:Node$aws:ebs/volume:Volume::{cluster}-data-data"]
    assert volume["id"] == w["kept"] and volume["protect"] is True
    secrets = urns[f"{s}talos-dr:talos:TalosCluster$talos:machine/secrets:Secrets::{cluster}-secrets"]
    assert secrets["bundle"] == w["kit"].secrets_bundle, "the provider read the kit's bundle from the import ID"
    assert not Path(secrets["id"]).exists(), "the secrets.yaml is gone once the import is done"

    out = res.out
    steps = [out.index(f"{n}. ") for n in range(1, 6)]
    assert steps == sorted(steps), out
    assert f"data volume logs ({w['gone']}) is gone: `pulumi up` creates it from its newest snapshot {w['snap']}" in out
    assert out.rstrip().endswith("pulumi up --stack prod\n  talos-dr restore latest --stack prod".rstrip())
    assert "BLOCKER" not in out


def test_rebuild_again_continues_and_imports_nothing_twice(world):
    assert rebuild_cli(world).code == 0
    before = world["fake"].state("prod")["resources"]
    res = rebuild_cli(world)
    assert res.code == 0, res
    assert "Selected the existing stack prod" in res.out and "Nothing left to import" in res.out
    assert world["fake"].state("prod")["resources"] == before
    assert ["--non-interactive", "stack", "select", "--stack", "prod"] in world["fake"].argv()


def test_a_stack_holding_other_resources_is_refused(world):
    fake = world["fake"]
    (fake.home / "prod.json").write_text(json.dumps({"config": {}, "resources": [
        {"urn": "urn:pulumi:prod::talos-dr::aws:ec2/vpc:Vpc::other", "type": "aws:ec2/vpc:Vpc", "id": "vpc-1"}]}))
    res = rebuild_cli(world)
    assert res.code == ExitCode.RECOVERY_KIT, res
    assert "already holds 1 other resource" in res.err and "--stack NEW-NAME" in res.err
    assert not any(a[:1] == ["import"] or a[:2] == ["config", "set"] for a in fake.argv())


def test_wrong_identity_is_refused_before_pulumi_runs(world, tmp_path):
    other = age_keygen(tmp_path, "other.txt")
    res = run_cli(rebuild.main, "--identity", str(other.identity_file), "--bucket", world["bucket"],
                  "--project-dir", str(world["project"]))
    assert res.code == ExitCode.RECOVERY_KIT, res
    assert "not encrypted to this age identity" in res.err
    assert world["fake"].argv() == []


def test_no_kit_in_the_bucket(world, s3_client):
    s3_client.delete_object(Bucket=world["bucket"], Key=kits.kit_key(world["cluster"]))
    res = rebuild_cli(world)
    assert res.code == ExitCode.RECOVERY_KIT, res
    assert "no recovery kit" in res.err and "ageRecipients" in res.err


def test_an_attached_volume_is_a_blocker_not_a_detach(world):
    ec2 = world["ec2"]
    image = ec2.describe_images()["Images"][0]["ImageId"]
    inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": "us-east-1a"})
    iid = inst["Instances"][0]["InstanceId"]
    ec2.attach_volume(VolumeId=world["kept"], InstanceId=iid, Device="/dev/sdf")
    res = rebuild_cli(world)
    assert res.code == 0, res
    assert f"BLOCKER:  data volume data ({world['kept']}) is attached to {iid}" in res.out
    assert "Before `pulumi up`, clear what is marked BLOCKER" in res.out
    vol = ec2.describe_volumes(VolumeIds=[world["kept"]])["Volumes"][0]
    assert vol["Attachments"][0]["InstanceId"] == iid, "nothing was detached"


def test_dry_run_changes_nothing(world):
    res = rebuild_cli(world, "--dry-run")
    assert res.code == 0, res
    assert "Plan for stack prod" in res.out and "--dry-run: nothing was created or changed" in res.out
    assert world["fake"].argv() == []


# --- who wrote the kit, and whether this machine has seen it -------------------------

DEPLOYER = "arn:aws:iam::123456789012:role/deployer"


def _put_kit(w, s3_client, kit, writer: str | None = DEPLOYER) -> str:
    sealed = kits.seal(kit, [x25519.Recipient.from_str(w["key"].recipient)])
    meta = {kits.WRITTEN_BY: writer} if writer else {}
    return s3_client.put_object(Bucket=w["bucket"], Key=kits.kit_key(w["cluster"]), Body=sealed, Metadata=meta,
                                ChecksumAlgorithm="SHA256")["VersionId"]


def test_rebuild_shows_the_history_and_who_wrote_each_version_and_remembers_the_one_it_used(world, s3_client):
    w = world
    first = _put_kit(w, s3_client, w["kit"])
    res = rebuild_cli(w, "--dry-run")
    assert res.code == 0, res
    assert "2 version(s)" in res.out
    assert f"version {first}" in res.out and f"written by {DEPLOYER}  (current)" in res.out
    assert "written by not recorded" in res.out  # the fixture's first version has no metadata
    assert "S3 itself does not record the writer" in res.out
    assert "match the SHA-256 S3 recorded" in res.out
    assert "has not seen a kit" in res.out
    seen = w["project"] / ".talos" / "recovery-kits-seen.json"
    assert oct(seen.stat().st_mode & 0o777) == "0o600"
    record = json.loads(seen.read_text())["kits"][f"s3://{w['bucket']}/{kits.kit_key(w['cluster'])}"]
    assert record["versionId"] == first and record["checksumSHA256"]


def test_a_kit_newer_than_this_machine_saw_is_refused_without_a_yes_and_flagged_when_its_writer_is_new(world, s3_client):
    w = world
    _put_kit(w, s3_client, w["kit"])
    _put_kit(w, s3_client, w["kit"])
    assert rebuild_cli(w, "--dry-run").code == 0  # seen: the deployer's newest
    forged_config = {**w["kit"].config, "talos-dr:adminCidrs": '["0.0.0.0/0"]'}
    forged = _put_kit(w, s3_client, kits.Kit(**{**w["kit"].__dict__, "config": forged_config}),
                      writer="arn:aws:iam::123456789012:role/intruder")
    res = rebuild_cli(w, "--dry-run")
    assert res.code == ExitCode.UNTRUSTED_KIT == 37, res
    assert "newer than the kit this machine last saw" in res.err and "--accept-newer-kit" in res.err
    assert "warning: the newest version was written by arn:aws:iam::123456789012:role/intruder" in res.out
    assert w["fake"].argv() == [] or all(a[:1] != ["import"] for a in w["fake"].argv())
    # a typed "no" stops too; "yes" (or the flag) goes on, and the newer one becomes the one seen
    assert run_cli(rebuild.main, "--identity", str(w["key"].identity_file), "--bucket", w["bucket"],
                   "--project-dir", str(w["project"]), "--dry-run", stdin=_Tty("no\n")).code == 37
    res = run_cli(rebuild.main, "--identity", str(w["key"].identity_file), "--bucket", w["bucket"],
                  "--project-dir", str(w["project"]), "--dry-run", stdin=_Tty("yes\n"))
    assert res.code == 0, res
    assert rebuild_cli(w, "--dry-run").code == 0, "accepted once, not asked again"
    seen = json.loads((w["project"] / ".talos" / "recovery-kits-seen.json").read_text())["kits"]
    assert next(iter(seen.values()))["versionId"] == forged


def test_an_older_version_can_be_chosen(world, s3_client):
    w = world
    good = _put_kit(w, s3_client, w["kit"])
    _put_kit(w, s3_client, w["kit"], writer="arn:aws:iam::123456789012:role/intruder")
    res = rebuild_cli(w, "--dry-run", "--kit-version", good)
    assert res.code == 0, res
    assert f"Downloading version {good}" in res.out
    assert rebuild_cli(w, "--dry-run", "--kit-version", "nope").code == ExitCode.RECOVERY_KIT


@pytest.mark.parametrize("key", ["talos-dr:snapshotReadersX", "aws:notAProviderSetting", "-Cevil", "other:thing"])
def test_a_kit_with_settings_this_talos_dr_does_not_know_is_refused(world, s3_client, key):
    w = world
    _put_kit(w, s3_client, kits.Kit(**{**w["kit"].__dict__, "secret_config": {**w["kit"].secret_config, key: "x"}}))
    res = rebuild_cli(w, "--dry-run")
    assert res.code == ExitCode.UNTRUSTED_KIT, res
    assert f"does not know: {key}" in res.err
    assert not (w["project"] / ".talos" / "recovery-kits-seen.json").exists(), "a refused kit is not remembered"


def test_a_kit_whose_bytes_differ_from_what_s3_recorded_is_refused(world, s3_client):
    from dataclasses import replace

    from dr.adapters import kit_store
    from dr.core.errors import UntrustedKit

    w = world
    _put_kit(w, s3_client, w["kit"])
    key = kits.kit_key(w["cluster"])
    (newest, *_rest) = kit_store.versions(s3_client, w["bucket"], key)
    assert newest.checksum_sha256 and newest.written_by == DEPLOYER
    assert kit_store.get_kit(s3_client, w["bucket"], key, newest).startswith(b"age-encryption.org/v1\n")
    with pytest.raises(UntrustedKit, match="not what S3 recorded at upload"):
        kit_store.get_kit(s3_client, w["bucket"], key, replace(newest, checksum_sha256=base64.b64encode(b"x" * 32).decode()))


class _Tty:
    def __init__(self, text: str) -> None:
        import io

        self._buf = io.StringIO(text)

    def isatty(self) -> bool:
        return True

    def readline(self) -> str:
        return self._buf.readline()


def test_project_and_kit_settings_agree():
    from infra.config import PROJECT_KEYS

    assert set(kits.PROJECT_SETTINGS) == set(PROJECT_KEYS)


def test_the_old_snapshot_log_group_is_imported_not_collided_with(world, s3_client):
    """The log group's name is fixed, so after a lost state `pulumi up` would fail
    creating it. The rebuild imports it into the new stack (each import names its provider version, minor 7)."""
    import boto3

    w = world
    name = f"/talos-dr/{w['cluster']}/snapshots"
    boto3.client("logs", region_name="us-east-1").create_log_group(logGroupName=name)
    res = rebuild_cli(w)
    assert res.code == 0, res
    assert f"the snapshot Lambda's log group {name}" in res.out
    state = w["fake"].state("prod")
    urns = {r["urn"]: r for r in state["resources"]}
    urn = (f"urn:pulumi:prod::talos-dr::talos-dr:schedule:SnapshotSchedule$aws:cloudwatch/logGroup:LogGroup::"
           f"{w['cluster']}-logs")
    assert urns[urn]["id"] == name


def test_an_identity_file_others_can_read_is_warned_about(world, s3_client):
    w = world
    w["key"].identity_file.chmod(0o644)
    res = rebuild_cli(w, "--dry-run")
    assert res.code == 0, res
    assert "is readable by others (mode 644)" in res.out
    w["key"].identity_file.chmod(0o600)
    assert "readable by others" not in rebuild_cli(w, "--dry-run").out


# --- a stack of three control-plane nodes ---------------------------------------------------------------------------

ZONES3 = ["us-east-1a", "us-east-1b", "us-east-1c"]


@pytest.fixture
def world3(world, s3_client):
    """The same bucket, now with the kit of a three-node stack: one data volume per node, each in its node's zone;
    node 1's volume is lost, with a snapshot of its own (and a newer one of node 0's volume: same name, same mount)."""
    w, ec2 = world, world["ec2"]
    cluster = w["cluster"]
    tag = f"prod/{cluster}"

    def volume(zone: str, name: str) -> str:
        return ec2.create_volume(AvailabilityZone=zone, Size=20, TagSpecifications=[
            {"ResourceType": "volume", "Tags": [{"Key": DATA_VOLUME_TAG, "Value": tag}, {"Key": "Name", "Value": name}]}
        ])["VolumeId"]

    def snapshot(vol: str, name: str) -> str:
        return ec2.create_snapshot(VolumeId=vol, TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
            {"Key": DATA_VOLUME_TAG, "Value": tag}, {"Key": MOUNT_TAG, "Value": "/var/mnt/data"},
            {"Key": "Name", "Value": name}, {"Key": SNAPSHOT_BY_TAG, "Value": SNAPSHOT_BY_DLM}]}])["SnapshotId"]

    names = [f"{cluster}-data", f"{cluster}-data-1", f"{cluster}-data-2"]
    vols = [volume(z, n) for z, n in zip(ZONES3, names, strict=True)]
    own = snapshot(vols[1], names[1])
    decoy = snapshot(vols[0], names[0])
    ec2.delete_volume(VolumeId=vols[1])
    config = {**w["kit"].config, "talos-dr:controlPlaneNodes": "3",
              "talos-dr:dataVolumes": json.dumps([{"name": "data", "size": 20, "device": "/dev/sdf"}])}
    kit = kits.Kit(**{**w["kit"].__dict__, "config": config, "data_volumes": tuple(
        {"name": "data", "id": v, "node": i, "nodeName": cluster if i == 0 else f"{cluster}-cp{i}",
         "availabilityZone": z} for i, (v, z) in enumerate(zip(vols, ZONES3, strict=True)))})
    _put_kit(w, s3_client, kit)
    return {**w, "kit": kit, "vols": vols, "own": own, "decoy": decoy}


def test_rebuild_of_three_nodes_imports_each_surviving_volume_and_pins_the_lost_one_for_its_node(world3):
    w = world3
    cluster, vols = w["cluster"], w["vols"]
    res = rebuild_cli(w)
    assert res.code == 0, res
    state = w["fake"].state("prod")
    assert json.loads(state["config"]["talos-dr:nodeDataVolumeSnapshots"][0]) == {"1": {"data": w["own"]}}
    assert "snapshotId" not in state["config"]["talos-dr:dataVolumes"][0], "dataVolumes is every node's"
    s = "urn:pulumi:prod::talos-dr::"
    volumes = {r["urn"]: r for r in state["resources"] if r["type"] == "aws:ebs/volume:Volume"}
    assert {u: (r["id"], r["parent"], r["protect"]) for u, r in volumes.items()} == {
        f"{s}talos-dr:node:Node$aws:ebs/volume:Volume::{cluster}-data-data":
            (vols[0], f"{s}talos-dr:node:Node::{cluster}", True),
        f"{s}talos-dr:node:Node$aws:ebs/volume:Volume::{cluster}-cp2-data-data":
            (vols[2], f"{s}talos-dr:node:Node::{cluster}-cp2", True),
    }
    assert f"data volume data of node {cluster}-cp1 (us-east-1b) ({vols[1]}) is gone: `pulumi up` creates it " \
           f"from its newest snapshot {w['own']}" in res.out
    assert w["decoy"] not in res.out.split("Plan for stack")[1], "node 0's snapshot is not node 1's"
    # Again: nothing imported twice; node 2's component is named, not created again.
    again = rebuild_cli(w)
    assert again.code == 0, again
    assert "Nothing left to import" in again.out
    assert w["fake"].state("prod")["resources"] == state["resources"]


def test_dry_run_of_three_nodes_prints_the_plan_per_node(world3):
    w = world3
    cluster, vols = w["cluster"], w["vols"]
    res = rebuild_cli(w, "--dry-run")
    assert res.code == 0, res
    assert "3 control-plane nodes; their data volumes:" in res.out
    for line in (f"data volume data of node {cluster} (us-east-1a): {vols[0]} available; imported",
                 f"data volume data of node {cluster}-cp1 (us-east-1b): {vols[1]} lost; created from snapshot "
                 f"{w['own']}",
                 f"data volume data of node {cluster}-cp2 (us-east-1c): {vols[2]} available; imported"):
        assert f"    {line}\n" in res.out, res.out
    assert f"nodeDataVolumeSnapshots 1.data: node {cluster}-cp1's volume data created from snapshot {w['own']}" \
        in res.out
    assert w["fake"].argv() == []


def test_an_attached_volume_of_another_node_is_a_blocker_naming_that_node(world3):
    w, ec2 = world3, world3["ec2"]
    image = ec2.describe_images()["Images"][0]["ImageId"]
    iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                            Placement={"AvailabilityZone": "us-east-1c"})["Instances"][0]["InstanceId"]
    ec2.attach_volume(VolumeId=w["vols"][2], InstanceId=iid, Device="/dev/sdf")
    res = rebuild_cli(w)
    assert res.code == 0, res
    assert (f"BLOCKER:  data volume data of node {w['cluster']}-cp2 (us-east-1c) ({w['vols'][2]}) is attached to "
            f"{iid}") in res.out
