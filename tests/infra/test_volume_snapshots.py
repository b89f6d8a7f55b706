"""Data volume snapshots under Pulumi mocks: one DLM policy targeting exactly the data volumes' own tag, with its own
role that can only snapshot those volumes and expire the policy's snapshots."""

from __future__ import annotations

import json

import pytest

from dr.core.volume_snapshots import DATA_VOLUME_TAG, SNAPSHOT_BY_DLM, SNAPSHOT_BY_TAG, dlm_create_rule
from infra.config import ConfigValidationError, validate_config
from tests.infra.mocks import ACCOUNT_ID, run_program, stack_file_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

POLICY = "aws:dlm/lifecyclePolicy:LifecyclePolicy"
# Every action the role may take. DeleteSnapshot is the retain rule's; the statement limits it to this policy's
# snapshots (copied target tag and the talos-dr/snapshot-by tag the policy adds).
SNAPSHOT_ONLY = {"ec2:DescribeVolumes", "ec2:DescribeSnapshots", "ec2:DescribeInstances", "ec2:CreateSnapshot",
                 "ec2:CreateTags", "ec2:DeleteSnapshot"}


@pytest.fixture(scope="module")
def prod():
    return run_program(stack_file_config())


def dlm_role(run):
    policy = run.one(POLICY)
    role = run.mocks.resources["talos-dr-dlm"]
    assert role.typ == "aws:iam/role:Role" and policy.inputs["executionRoleArn"].endswith(role.name)
    (inline,) = [p for p in run.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.id]
    return role, json.loads(inline.inputs["policy"])


def test_policy_targets_exactly_the_data_volumes_tag(prod):
    policy = prod.one(POLICY)
    details = policy.inputs["policyDetails"]
    volumes = prod.of_type("aws:ebs/volume:Volume")
    assert volumes
    target = details["targetTags"]
    assert target == {DATA_VOLUME_TAG: "prod/talos-dr"}
    for vol in volumes:
        assert vol.inputs["tags"][DATA_VOLUME_TAG] == "prod/talos-dr", prod.urn(vol.name)
    # No other tagged resource of the stack carries the target tag (DLM takes any resource with any target tag).
    others = [r.name for r in prod.mocks.resources.values()
              if r.typ != "aws:ebs/volume:Volume" and DATA_VOLUME_TAG in (r.inputs.get("tags") or {})]
    assert others == []
    assert details["resourceTypes"] == ["VOLUME"] and details["policyType"] == "EBS_SNAPSHOT_MANAGEMENT"
    (schedule,) = details["schedules"]
    assert schedule["createRule"] == {"interval": 24, "intervalUnit": "HOURS"}  # default: daily
    assert schedule["retainRule"] == {"count": 7}
    assert schedule["copyTags"] is True and schedule["tagsToAdd"] == {SNAPSHOT_BY_TAG: SNAPSHOT_BY_DLM}
    assert policy.inputs["state"] == "ENABLED"


def test_role_can_only_snapshot(prod):
    role, doc = dlm_role(prod)
    trust = json.loads(role.inputs["assumeRolePolicy"])
    (assume,) = trust["Statement"]
    assert assume["Principal"] == {"Service": "dlm.amazonaws.com"} and assume["Action"] == "sts:AssumeRole"
    # No condition: no DLM page documents DLM sending aws:SourceAccount, and a condition on a missing key would keep DLM out
    assert "Condition" not in assume
    actions = set()
    for stmt in doc["Statement"]:
        assert stmt["Effect"] == "Allow"
        acts = stmt["Action"] if isinstance(stmt["Action"], list) else [stmt["Action"]]
        actions |= set(acts)
        if stmt["Resource"] == "*":
            assert all(a.startswith("ec2:Describe") for a in acts), stmt
        elif "ec2:DeleteSnapshot" in acts:
            assert stmt["Resource"] == "arn:aws:ec2:us-east-1::snapshot/*"
            assert stmt["Condition"] == {"StringEquals": {f"aws:ResourceTag/{DATA_VOLUME_TAG}": "prod/talos-dr",
                                                          f"aws:ResourceTag/{SNAPSHOT_BY_TAG}": SNAPSHOT_BY_DLM}}
        elif stmt["Resource"].endswith(":volume/*"):
            assert acts == ["ec2:CreateSnapshot"]
            assert stmt["Resource"] == f"arn:aws:ec2:us-east-1:{ACCOUNT_ID}:volume/*"
            assert stmt["Condition"] == {"StringEquals": {f"aws:ResourceTag/{DATA_VOLUME_TAG}": "prod/talos-dr"}}
        else:
            assert stmt["Resource"] == "arn:aws:ec2:us-east-1::snapshot/*"
            assert set(acts) <= {"ec2:CreateSnapshot", "ec2:CreateTags"}
    assert actions == SNAPSHOT_ONLY
    assert not any(a.startswith(("iam:", "s3:", "events:", "kms:")) or a == "ec2:*" for a in actions)


def test_schedule_and_retention_come_from_config():
    config = {**stack_file_config(), "talos-dr:dataVolumeSnapshotSchedule": "rate(6 hours)",
              "talos-dr:dataVolumeSnapshotRetain": "30"}
    run = run_program(config)
    (schedule,) = run.one(POLICY).inputs["policyDetails"]["schedules"]
    assert schedule["createRule"] == {"interval": 6, "intervalUnit": "HOURS"}
    assert schedule["retainRule"] == {"count": 30}


def test_no_data_volumes_no_policy():
    run = run_program({**stack_file_config(), "talos-dr:dataVolumes": "[]"})
    assert run.of_type(POLICY) == []


def test_volume_from_a_snapshot():
    volumes = [{"name": "data", "size": 20, "device": "/dev/sdf", "snapshotId": "snap-0123456789abcdef0"}]
    run = run_program({**stack_file_config(), "talos-dr:dataVolumes": json.dumps(volumes)})
    assert run.one("aws:ebs/volume:Volume").inputs["snapshotId"] == "snap-0123456789abcdef0"


BASE = {"aws:region": "us-east-1", "adminCidrs": '["203.0.113.7/32"]'}


@pytest.mark.parametrize("key,value,words", [
    ("dataVolumeSnapshotSchedule", "rate(5 hours)", "1, 2, 3, 4, 6, 8, 12 or 24 hours"),
    ("dataVolumeSnapshotSchedule", "daily", "not a schedule"),
    ("dataVolumeSnapshotRetain", "0", "out of range"),
    ("dataVolumeSnapshotRetain", "1001", "out of range"),
    ("dataVolumes", '[{"name": "d", "size": 1, "device": "/dev/sdf", "snapshotId": "vol-1234"}]',
     "not an EBS snapshot id"),
])
def test_bad_settings_are_refused(key, value, words):
    with pytest.raises(ConfigValidationError) as info:
        validate_config({**BASE, key: value})
    assert any(words in msg for _k, msg in info.value.problems), info.value.problems


@pytest.mark.parametrize("text,rule", [
    ("rate(1 day)", {"interval": 24, "interval_unit": "HOURS"}),
    ("rate(1 hour)", {"interval": 1, "interval_unit": "HOURS"}),
    ("rate(12 hours)", {"interval": 12, "interval_unit": "HOURS"}),
    ("cron(0 3 * * ? *)", {"cron_expression": "cron(0 3 * * ? *)"}),
])
def test_dlm_create_rule(text, rule):
    assert dlm_create_rule(text) == rule


@pytest.mark.parametrize("text", ["rate(2 days)", "rate(1 hours)", "rate(2 hour)", "rate(0 hours)", "rate(48 hours)"])
def test_dlm_create_rule_refuses(text):
    with pytest.raises(ValueError):
        dlm_create_rule(text)
