"""The IAM and endpoint policy documents of the snapshot schedule (``infra/schedule.py``), as JSON strings: pure
functions of ARNs, so the least-privilege tests read them without Pulumi."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from dr.core.naming import PREFIX as SNAPSHOT_NAME_PREFIX
from infra.bucket import LATEST_NAME


def destination_policy(queue_arn: str) -> str:
    """The runner's permission to record an exhausted run in its failed-runs queue: Lambda sends an asynchronous
    invocation's on-failure record with the function's execution role
    (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html, "Permissions")."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Sid": "RecordFailedRuns", "Effect": "Allow", "Action": ["sqs:SendMessage"],
                           "Resource": [queue_arn]}],
        },
        sort_keys=True,
    )


def lambda_policy(bucket_arn: str, prefix: str, credential_key: str) -> str:
    """The runner's inline policy: create, tag and read back snapshot objects, copy the newest to ``<prefix>latest``,
    list the prefix (the retention tier depends on what is there, dr.core.tiers), read its credential object.

    No s3:DeleteObject, nothing outside the snapshot keys, ``latest`` and the credential. GetObject on the snapshot
    keys stays: a HEAD is authorized as s3:GetObject, and so is reading a CopyObject's source
    (https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html, API_CopyObject.html "Permissions"). It
    gives the role nothing its credential does not: every byte of a snapshot is etcd, which os:etcd:backup reads.
    """
    snapshots = f"{bucket_arn}/{prefix}*{SNAPSHOT_NAME_PREFIX}*"
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "WriteSnapshots",
                    "Effect": "Allow",
                    "Action": ["s3:PutObject", "s3:AbortMultipartUpload", "s3:PutObjectTagging"],
                    "Resource": [snapshots, f"{bucket_arn}/{prefix}{LATEST_NAME}"],
                },
                {
                    "Sid": "ReadBackSnapshots",
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:GetObjectTagging"],
                    "Resource": [snapshots],
                },
                {
                    "Sid": "ListSnapshots",
                    "Effect": "Allow",
                    "Action": ["s3:ListBucket"],
                    "Resource": [bucket_arn],
                    "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}},
                },
                {
                    "Sid": "ReadBackupCredential",
                    "Effect": "Allow",
                    "Action": ["s3:GetObject"],
                    "Resource": [f"{bucket_arn}/{credential_key}"],
                },
            ],
        },
        sort_keys=True,
    )


def endpoint_policy(bucket_arn: str) -> str:
    """The Lambda subnet's S3 gateway endpoint policy: this bucket only, so a compromised
    Lambda cannot copy snapshots out to a bucket of its own; the subnet has no other way out."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "ThisBucketOnly",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": ["s3:GetObject", "s3:GetObjectTagging", "s3:PutObject", "s3:PutObjectTagging",
                               "s3:AbortMultipartUpload", "s3:ListBucket"],
                    "Resource": [bucket_arn, f"{bucket_arn}/*"],
                }
            ],
        },
        sort_keys=True,
    )


def invoke_policy(function_arn: str) -> str:
    """The scheduler's policy: invoke this one function, nothing else."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["lambda:InvokeFunction"], "Resource": [function_arn, f"{function_arn}:*"]}
            ],
        },
        sort_keys=True,
    )


def assume_role_policy(service: str, account_id: str | None = None, source_arns: Sequence[str] = ()) -> str:
    stmt: dict[str, Any] = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    condition: dict[str, Any] = {}
    if account_id:  # confused-deputy guard: only schedules in this account may assume the role
        condition["StringEquals"] = {"aws:SourceAccount": account_id}
    if source_arns:  # ... and only for this stack's schedule: another schedule in the account cannot borrow this role
        condition["ArnLike"] = {"aws:SourceArn": list(source_arns)}
    if condition:
        stmt["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Statement": [stmt]}, sort_keys=True)


def schedule_source_arns(group_arn: str) -> list[str]:
    """What aws:SourceArn may be when EventBridge Scheduler assumes the role: this stack's own schedule group, or a
    schedule in it. The Scheduler guide's execution-role setup
    (https://docs.aws.amazon.com/scheduler/latest/UserGuide/setting-up.html, "Set up the execution role") guards the
    trust with aws:SourceAccount and aws:SourceArn; which of the two ARNs the service sends is not quoted here
    (not checked against AWS), so both are allowed, and both name only this stack's group."""
    prefix, _, group = group_arn.rpartition(":schedule-group/")
    return [group_arn, f"{prefix}:schedule/{group}/*"]
