"""The sandbox's S3: moto in server mode on a loopback port, with the backup bucket created and versioned."""

from __future__ import annotations

import sys
from pathlib import Path

from sandbox import procs

ACCESS_KEY = "sandbox"
SECRET_KEY = "sandbox-secret"
MARKER = "moto.server"


def spawn(port: int, log: Path, python: str | None = None) -> int:
    """Start moto's server (not waiting for it)."""
    return procs.spawn([python or sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log)


def ready_or_respawn(pid: int, port: int, log: Path, attempts: int = 3) -> tuple[int, int, bool]:
    """(pid, port, answers) of the moto server last started (to stop it either way). ``procs.free_port()`` finds a port free *now*;
    another process can bind it before moto does, and moto then exits ("Address already in use"): it is started
    again on another port, up to ``attempts`` times in all."""
    for attempt in range(attempts):
        if wait_ready(pid, port):
            return pid, port, True
        if procs.alive(pid) or attempt == attempts - 1:
            break  # alive but not listening (a timeout), or out of attempts
        port = procs.free_port()
        pid = spawn(port, log)
    return pid, port, False


def client(endpoint: str, region: str = "us-east-1"):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def wait_ready(pid: int, port: int, timeout: float = 30) -> bool:
    return procs.wait_for(lambda: procs.port_open(port) or not procs.alive(pid), timeout) and procs.alive(pid)


def create_bucket(endpoint: str, bucket: str, region: str = "us-east-1") -> None:
    c = client(endpoint, region)
    c.create_bucket(Bucket=bucket)
    c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    c.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": lifecycle_rules()})


def lifecycle_rules(prefix: str = "snapshots/") -> list[dict]:
    """The stack's tier rules (infra/bucket.py lifecycle_rules: one rule per retention tier, on the tier tag, expiring
    after the tier's default days), in the S3 API's shape, so the sandbox bucket looks like the stack's."""
    from dr.core import tiers

    return [{"ID": f"expire-{tier}-snapshots", "Status": "Enabled",
             "Filter": {"And": {"Prefix": prefix, "Tags": [{"Key": tiers.TAG_KEY, "Value": tier}]}},
             "Expiration": {"Days": tiers.DEFAULT_DAYS[tier]}} for tier in tiers.TIERS]
