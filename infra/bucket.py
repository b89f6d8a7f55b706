"""Backup bucket: private, versioned, encrypted, TLS-only, and out of `pulumi destroy`'s reach."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from dr.core.outputs import DEFAULT_SNAPSHOT_PREFIX

# Multipart uploads a crashed backup left behind cost money and are invisible in listings.
ABORT_INCOMPLETE_UPLOADS_DAYS = 1


@dataclass
class BackupBucketArgs:
    retention_days: int
    bucket_name: str | None = None  # None: Pulumi auto-names it from the resource name plus a random suffix
    snapshot_prefix: str = DEFAULT_SNAPSHOT_PREFIX
    tags: Mapping[str, str] = field(default_factory=dict)


def tls_only_policy(bucket_arn: str) -> str:
    """A bucket policy denying every request that does not use TLS."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket_arn, f"{bucket_arn}/*"],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }
            ],
        }
    )


class BackupBucket(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]

    def __init__(self, name: str, args: BackupBucketArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("talos-dr:bucket:BackupBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        bucket = aws.s3.Bucket(
            f"{name}",
            bucket=args.bucket_name,
            force_destroy=False,  # never delete a bucket that still holds backups
            tags=dict(args.tags),
            # The backups are the point of this stack: `pulumi destroy` stops here (see README, "Clean up").
            opts=pulumi.ResourceOptions(parent=self, protect=True),
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"},  # ACLs off: access is by policy alone
            opts=child,
        )
        public_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket.id,
            versioning_configuration={"status": "Enabled"},  # an overwritten or deleted snapshot stays recoverable
            opts=child,
        )
        # SSE-S3 (AES256), not SSE-KMS: the DR bucket must stay readable when everything else is gone. With a KMS
        # key, a scheduled key deletion, a key policy mistake or a lost kms:Decrypt grant makes every backup
        # unreadable, and the restore path gains a second service that can fail. The snapshots' Kubernetes Secrets
        # are already encrypted by Talos (secretbox key in the PKI bundle); access control is the policy below.
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-sse",
            bucket=bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}],
            opts=child,
        )
        aws.s3.BucketPolicy(
            f"{name}-tls-only",
            bucket=bucket.id,
            policy=bucket.arn.apply(tls_only_policy),
            # S3 refuses policies while the public access block is being changed; order them.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_block]),
        )
        retention = args.retention_days
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=[
                {
                    "id": "expire-snapshots",
                    "status": "Enabled",
                    "filter": {"prefix": args.snapshot_prefix},
                    "expiration": {"days": retention},
                    "noncurrent_version_expiration": {"noncurrent_days": retention},
                },
                {
                    "id": "abort-incomplete-multipart-uploads",
                    "status": "Enabled",
                    "filter": {"prefix": ""},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": ABORT_INCOMPLETE_UPLOADS_DAYS},
                },
            ],
            opts=child,
        )

        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.register_outputs({"bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn})
