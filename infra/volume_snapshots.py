"""Data volume snapshots: an AWS Data Lifecycle Manager policy that snapshots every data volume, and its own role.

etcd snapshots hold the Kubernetes objects; what pods write to the EBS data volumes is only here. DLM runs inside
AWS on its own schedule, needs nothing from the cluster, and keeps ``dataVolumeSnapshotRetain`` snapshots per volume.

The policy targets one tag, ``talos-dr/data-volume = <stack>/<cluster>``, that only this stack's data volumes carry
(infra/node.py): DLM snapshots every volume with *any* of its target tags (pulumi-aws v7 ``dlm.LifecyclePolicy``,
``policy_details.target_tags``), so a shared tag such as ``talos-dr/cluster`` would also catch another stack's volumes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from dr.core.volume_snapshots import SNAPSHOT_BY_DLM, SNAPSHOT_BY_TAG, dlm_create_rule


@dataclass
class DataVolumeSnapshotsArgs:
    target_tags: Mapping[str, str]  # exactly one tag, the data volumes' own
    schedule: str  # dataVolumeSnapshotSchedule: rate(1 day), rate(N hours) or cron(...)
    retain: int  # dataVolumeSnapshotRetain
    region: str
    account_id: pulumi.Input[str]
    tags: Mapping[str, str] = field(default_factory=dict)


def assume_role_policy(account_id: str) -> str:
    """Only Data Lifecycle Manager may assume the role. No ``aws:SourceAccount`` / ``aws:SourceArn`` condition: the
    DLM service-role page shows its default roles trusting ``dlm.amazonaws.com`` with no condition
    (https://docs.aws.amazon.com/ebs/latest/userguide/service-role.html, "Default service roles"), and no DLM page
    says DLM sends those keys when it assumes a role. A ``StringEquals`` on a key the request lacks is false, so the
    condition could keep DLM out altogether and no volume would be snapshotted. ``account_id`` is kept in the signature
    for the day AWS documents one."""
    del account_id
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "dlm.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }],
    })


def role_policy(target_tags: Mapping[str, str], region: str, account_id: str) -> str:
    """What DLM needs to snapshot the tagged volumes and expire its own snapshots, and nothing else.

    Scoped down from AWS's managed ``AWSDataLifecycleManagerServiceRole`` (AWS Managed Policy reference,
    https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSDataLifecycleManagerServiceRole.html), which
    allows CreateSnapshot(s), DeleteSnapshot, CopySnapshot, ModifySnapshotAttribute, fast snapshot restore, snapshot
    tiers and EventBridge rules on every resource. Kept: the three Describe calls (EC2 Describe* take no resource
    ARNs), CreateSnapshot of a volume carrying the target tag, CreateTags on snapshots (the policy's copied and added
    tags) and DeleteSnapshot (the retain rule) of snapshots this policy made (they carry both the copied target tag
    and ``talos-dr/snapshot-by = dlm``). Dropped: CreateSnapshots (instance targets), copies, sharing, archiving, fast
    restore and EventBridge (cross-account event policies), none of which this policy uses.
    """
    (tag_key, tag_value), = target_tags.items()
    snapshots = f"arn:aws:ec2:{region}::snapshot/*"
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Describe", "Effect": "Allow",
             "Action": ["ec2:DescribeVolumes", "ec2:DescribeSnapshots", "ec2:DescribeInstances"], "Resource": "*"},
            {"Sid": "SnapshotTheDataVolumes", "Effect": "Allow", "Action": "ec2:CreateSnapshot",
             "Resource": f"arn:aws:ec2:{region}:{account_id}:volume/*",
             "Condition": {"StringEquals": {f"aws:ResourceTag/{tag_key}": tag_value}}},
            {"Sid": "CreateTheSnapshots", "Effect": "Allow", "Action": "ec2:CreateSnapshot", "Resource": snapshots},
            {"Sid": "TagTheSnapshots", "Effect": "Allow", "Action": "ec2:CreateTags", "Resource": snapshots},
            {"Sid": "ExpireOwnSnapshots", "Effect": "Allow", "Action": "ec2:DeleteSnapshot", "Resource": snapshots,
             "Condition": {"StringEquals": {f"aws:ResourceTag/{tag_key}": tag_value,
                                            f"aws:ResourceTag/{SNAPSHOT_BY_TAG}": SNAPSHOT_BY_DLM}}},
        ],
    })


class DataVolumeSnapshots(pulumi.ComponentResource):
    policy_id: pulumi.Output[str]
    role_arn: pulumi.Output[str]

    def __init__(self, name: str, args: DataVolumeSnapshotsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("talos-dr:volumesnapshots:DataVolumeSnapshots", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        if len(args.target_tags) != 1:
            raise ValueError(f"the DLM policy must target exactly one tag, got {dict(args.target_tags)}")
        account = pulumi.Output.from_input(args.account_id)

        role = aws.iam.Role(
            f"{name}-dlm",
            assume_role_policy=account.apply(assume_role_policy),
            description="Data Lifecycle Manager: snapshot the talos-dr data volumes, expire those snapshots",
            tags=dict(args.tags),
            opts=child,
        )
        role_policy_resource = aws.iam.RolePolicy(
            f"{name}-dlm-snapshot",
            role=role.id,
            policy=account.apply(lambda acct: role_policy(args.target_tags, args.region, acct)),
            opts=child,
        )
        details: Any = {
            "policy_type": "EBS_SNAPSHOT_MANAGEMENT",
            "resource_types": ["VOLUME"],
            "target_tags": dict(args.target_tags),
            "schedules": [{
                "name": "data-volumes",
                "create_rule": dlm_create_rule(args.schedule),
                "retain_rule": {"count": args.retain},
                # The volume's tags (name, mount path, the target tag) go onto each snapshot: dr.volumes finds
                # them by the target tag, and the role may expire only snapshots that carry it.
                "copy_tags": True,
                "tags_to_add": {SNAPSHOT_BY_TAG: SNAPSHOT_BY_DLM},
            }],
        }
        policy = aws.dlm.LifecyclePolicy(
            f"{name}-data-volumes",
            description=f"talos-dr {name}: snapshots of the data volumes",
            execution_role_arn=role.arn,
            state="ENABLED",
            policy_details=details,
            tags=dict(args.tags),
            # DLM assumes the role when the policy is created: the permissions must be in place first.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[role_policy_resource]),
        )
        self.policy_id = policy.id
        self.role_arn = role.arn
        self.register_outputs({"policy_id": self.policy_id, "role_arn": self.role_arn})
