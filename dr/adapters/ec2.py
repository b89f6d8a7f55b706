"""Thin EC2 adapter: the data volumes a rebuild may import, and their EBS snapshots. Failures become ``DRError``s."""

from __future__ import annotations

from collections.abc import Iterable

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from dr.core.errors import AccessDenied, DRError, S3Error
from dr.core.rebuild_plan import VolumeFacts
from dr.core.volume_snapshots import DATA_VOLUME_TAG, VolumeSnapshot, from_describe


def make_client(region: str | None = None):
    """An EC2 client with bounded retries and timeouts (boto3 honours AWS_ENDPOINT_URL_EC2 and the credential chain)."""
    cfg = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=30)
    return boto3.client("ec2", region_name=region or None, config=cfg)


def _translate(exc: BaseException, action: str) -> DRError:
    if isinstance(exc, NoCredentialsError):
        return AccessDenied(f"{action} failed: no AWS credentials found",
                            "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("UnauthorizedOperation", "AccessDenied", "AuthFailure"):
            return AccessDenied(f"{action} failed: access denied ({code})",
                                "use credentials that may call ec2:DescribeVolumes and ec2:DescribeSnapshots")
        return S3Error(f"{action} failed: {code}: {exc.response.get('Error', {}).get('Message') or code}",
                       "retry; check the region and your credentials")
    if isinstance(exc, BotoCoreError):
        return S3Error(f"{action} failed: {exc}", "check the network and the EC2 endpoint, then retry")
    return S3Error(f"{action} failed: {exc}", "retry; run with --debug for details")


def volumes(client, volume_ids: Iterable[str]) -> dict[str, VolumeFacts | None]:
    """What EC2 says about each volume id; None for one that no longer exists. One call per volume: DescribeVolumes
    fails a whole request on a single unknown id (InvalidVolume.NotFound)."""
    out: dict[str, VolumeFacts | None] = {}
    for vid in volume_ids:
        try:
            found = client.describe_volumes(VolumeIds=[vid]).get("Volumes") or []
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("InvalidVolume.NotFound", "InvalidVolumeID.Malformed"):
                out[vid] = None
                continue
            raise _translate(exc, f"ec2 DescribeVolumes {vid}") from exc
        except (BotoCoreError, NoCredentialsError) as exc:
            raise _translate(exc, f"ec2 DescribeVolumes {vid}") from exc
        if not found:
            out[vid] = None
            continue
        v = found[0]
        attached = tuple(a["InstanceId"] for a in v.get("Attachments") or []
                         if a.get("State") in ("attaching", "attached", "busy"))
        out[vid] = VolumeFacts(volume_id=vid, state=v.get("State", ""), attached_to=attached)
    return out


def data_volume_snapshots(client, tag_value: str) -> list[VolumeSnapshot]:
    """Every snapshot this account owns whose ``talos-dr/data-volume`` tag is ``tag_value`` (DLM copies the
    volume's tags onto its snapshots), all pages."""
    found: list[VolumeSnapshot] = []
    try:
        pages = client.get_paginator("describe_snapshots").paginate(
            OwnerIds=["self"], Filters=[{"Name": f"tag:{DATA_VOLUME_TAG}", "Values": [tag_value]}])
        for page in pages:
            found += [from_describe(s) for s in page.get("Snapshots") or []]
    except (ClientError, BotoCoreError, NoCredentialsError) as exc:
        raise _translate(exc, f"ec2 DescribeSnapshots (tag {DATA_VOLUME_TAG}={tag_value})") from exc
    return found
