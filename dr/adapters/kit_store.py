"""Thin S3 adapter for recovery kits: list ``recovery/*.kit.age`` in a bucket, list one kit's versions, download one
version checked against the SHA-256 S3 recorded at upload; and this machine's record of the last kit it saw."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from dr.adapters.fsutil import atomic_write
from dr.adapters.s3 import translate
from dr.core.errors import RecoveryKitError, UntrustedKit
from dr.core.recovery_kit import KIT_PREFIX, WRITTEN_BY, KitVersion, cluster_of_key
from dr.core.timefmt import iso_utc

# A kit is a few KiB; anything much larger is not one, and is not read into memory.
MAX_KIT_BYTES = 1024 * 1024
# How many versions `talos-dr rebuild` describes (one HEAD each for who wrote it and its checksum).
HISTORY = 10
# This machine's record of the kits it has seen (in the .talos folder, 0600): the version, when S3 stored it, and its
# checksum, per s3://bucket/key.
SEEN_FILE = "recovery-kits-seen.json"


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


def versions(client, bucket: str, key: str, *, describe: int = HISTORY) -> list[KitVersion]:
    """The kit's stored versions, newest first (delete markers left out); the newest ``describe`` are read with a HEAD
    each for their ``written-by`` metadata and the SHA-256 S3 recorded (ChecksumMode=ENABLED)."""
    found: list[dict[str, Any]] = []
    try:
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
            found += [v for v in page.get("Versions") or [] if v["Key"] == key]
        found.sort(key=lambda v: v["LastModified"], reverse=True)
        out = []
        for i, v in enumerate(found):
            meta: dict[str, str] = {}
            checksum = None
            if i < describe:
                head = client.head_object(Bucket=bucket, Key=key, VersionId=v["VersionId"], ChecksumMode="ENABLED")
                meta = head.get("Metadata") or {}
                checksum = head.get("ChecksumSHA256")
            out.append(KitVersion(version_id=v["VersionId"], last_modified=v["LastModified"], size=v["Size"],
                                  latest=bool(v.get("IsLatest")), written_by=meta.get(WRITTEN_BY),
                                  checksum_sha256=checksum))
    except (ClientError, BotoCoreError, NoCredentialsError) as exc:
        raise translate(exc, "listing the versions of", bucket, key) from exc
    return out


def get_kit(client, bucket: str, key: str, version: KitVersion | None = None) -> bytes:
    """The kit's bytes (at most MAX_KIT_BYTES): ``version``'s, checked against the SHA-256 S3 recorded when it was
    uploaded (``UntrustedKit`` when they differ), or the current object's."""
    where = f"s3://{bucket}/{key}" + (f" (version {version.version_id})" if version else "")
    extra = {"VersionId": version.version_id} if version else {}
    try:
        body = client.get_object(Bucket=bucket, Key=key, **extra)["Body"]
        data = body.read(MAX_KIT_BYTES + 1)
    except (ClientError, BotoCoreError, NoCredentialsError) as exc:
        raise translate(exc, "downloading", bucket, key) from exc
    if len(data) > MAX_KIT_BYTES:
        raise RecoveryKitError(f"{where} is larger than {MAX_KIT_BYTES} bytes: it is not a recovery kit",
                               "check what wrote it; a kit is a few KiB")
    recorded = version.checksum_sha256 if version else None
    if recorded and "-" not in recorded:  # a full-object checksum (a multipart upload's would end in -N)
        got = base64.b64encode(hashlib.sha256(data).digest()).decode()
        if got != recorded:
            raise UntrustedKit(f"{where} is not what S3 recorded at upload: SHA-256 {got} instead of {recorded}",
                               "use another version (--kit-version) and find out what replaced this one")
    return bytes(data)


def _seen_path(talos_dir: Path) -> Path:
    return talos_dir / SEEN_FILE


def load_seen(talos_dir: Path) -> dict[str, dict[str, Any]]:
    """The local record: s3://bucket/key -> {versionId, lastModified, checksumSHA256, seenAt}; {} when none or
    unreadable."""
    try:
        doc = json.loads(_seen_path(talos_dir).read_text())
    except (OSError, ValueError):
        return {}
    kits = doc.get("kits") if isinstance(doc, dict) else None
    return {k: v for k, v in kits.items() if isinstance(v, dict)} if isinstance(kits, dict) else {}


def record_seen(talos_dir: Path, where: str, version: KitVersion, now: str) -> Path:
    """Remember ``version`` as the last kit of ``where`` this machine saw (0600, written atomically)."""
    talos_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    kits = load_seen(talos_dir)
    kits[where] = {"versionId": version.version_id, "lastModified": iso_utc(version.last_modified),
                   "checksumSHA256": version.checksum_sha256, "seenAt": now}
    return atomic_write(_seen_path(talos_dir), json.dumps({"version": 1, "kits": dict(sorted(kits.items()))},
                                                          indent=2) + "\n", mode=0o600)
