"""Thin S3 adapter for recovery kits: list ``recovery/*.kit.age`` in a bucket and download one."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from dr.adapters.s3 import translate
from dr.core.recovery_kit import KIT_PREFIX, cluster_of_key

# A kit is a few KiB; anything much larger is not one, and is not read into memory.
MAX_KIT_BYTES = 1024 * 1024


def list_kits(client, bucket: str) -> dict[str, str]:
    """Cluster name -> key of every kit in ``bucket``."""
    kits: dict[str, str] = {}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=KIT_PREFIX):
            for obj in page.get("Contents") or []:
                name = cluster_of_key(obj["Key"])
                if name:
                    kits[name] = obj["Key"]
    except (ClientError, BotoCoreError, NoCredentialsError) as exc:
        raise translate(exc, "listing", bucket, KIT_PREFIX) from exc
    return kits


def get_kit(client, bucket: str, key: str) -> bytes:
    """The kit's bytes (at most MAX_KIT_BYTES)."""
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        data = body.read(MAX_KIT_BYTES + 1)
    except (ClientError, BotoCoreError, NoCredentialsError) as exc:
        raise translate(exc, "downloading", bucket, key) from exc
    if len(data) > MAX_KIT_BYTES:
        from dr.core.errors import RecoveryKitError

        raise RecoveryKitError(f"s3://{bucket}/{key} is larger than {MAX_KIT_BYTES} bytes: it is not a recovery kit",
                               "check what wrote it; a kit is a few KiB")
    return bytes(data)
