"""Thin S3 adapter: the client, error translation, object facts and tags, and ``ObjectWriter`` (a push-style upload
that becomes an object only on ``commit``). Every failure becomes a ``dr.core.errors`` type.

The snapshot store (``dr.adapters.store``) builds on it: it feeds ``ObjectWriter`` with bytes whose hash trailer it
checks as they go by, and commits only when the trailer matches, so a snapshot that fails verification never becomes
an object, and neither does an interrupted one. Reading goes through the store too.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from dr.core import spelling
from dr.core.errors import (
    AccessDenied,
    BucketNotFound,
    ConfigError,
    DiskFull,
    DRError,
    S3Error,
    SnapshotNotFound,
)
from dr.core.timefmt import iso_utc

PART_SIZE = 8 * 1024 * 1024
# Object metadata keys (S3 stores them as x-amz-meta-<key>).
META_SHA256 = "snapshot-sha256"
META_REVISION = "etcd-revision"
META_SIZE = "snapshot-size"
META_TAKEN_AT = "taken-at"
META_CLUSTER = "cluster"
META_SOURCE = "source"
# Which etcd member the snapshot was read from (three control-plane nodes; dr.core.member_choice): its node's name and
# private IP, its member id (hex, as `talosctl etcd members` prints it), and the quorum seen ("2/3": healthy members
# agreeing on the leader / voting members; "none" when taken without one). Absent on older snapshots and on one node.
META_MEMBER_NODE = "etcd-member-node"
META_MEMBER_IP = "etcd-member-ip"
META_MEMBER_ID = "etcd-member-id"
META_QUORUM = "etcd-quorum"
# Object tags, mutable after upload: verification results, and facts a streamed upload learns only at the end.
TAG_VERIFIED_AT = "verified-at"
TAG_VERIFIED_REVISION = "verified-revision"
TAG_VERIFIED_KEYS = "verified-keys"
# The SHA-256 S3 recorded for the object's stored bytes when it was uploaded (HeadObject ChecksumSHA256), as the
# verification saw it: a verification counts only for the bytes it checked (bytes replaced since
# then do not inherit it).
TAG_VERIFIED_CHECKSUM = "verified-checksum"
VERIFIED_TAG_PREFIX = "verified-"

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    last_modified: datetime
    metadata: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    checksum_sha256: str | None = None  # base64, full-object or composite ("...-N")
    version_id: str | None = None
    etag: str | None = None


def make_client(region: str | None = None, endpoint_url: str | None = None, profile: str | None = None):
    """An S3 client with bounded retries (standard mode: backoff with jitter) and timeouts that fail in seconds.

    boto3 honours ``AWS_ENDPOINT_URL_S3`` and the usual credential chain by itself; ``profile`` names a shared-config
    profile (the stack's ``aws:profile``, for the Pulumi program's own providers).
    """
    cfg = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        s3={"addressing_style": "path"} if (endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")) else None,
    )
    factory = boto3.Session(profile_name=profile) if profile else boto3
    return factory.client("s3", region_name=region or None, endpoint_url=endpoint_url, config=cfg)


def translate(exc: BaseException, action: str, bucket: str, key: str | None = None) -> DRError:
    """Turn a boto error into the matching ``DRError`` with a what-to-do hint."""
    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if isinstance(exc, DRError):
        return exc
    if isinstance(exc, NoCredentialsError):
        return AccessDenied(f"{action} {where} failed: no AWS credentials found",
                            "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        msg = err.get("Message") or code
        if code == "NoSuchBucket":
            return BucketNotFound(f"{action} {where} failed: bucket {bucket} does not exist",
                                  "check the bucket name (stack output etcdBackupBucketName) and region")
        if code in ("NoSuchKey", "NotFound", "404") or status == 404:
            return SnapshotNotFound(f"{action} {where} failed: no such object",
                                    f"list what exists with `{spelling.command('list')}`")
        if code in ("AccessDenied", "Forbidden", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                    "ExpiredToken", "InvalidToken") or status == 403:
            return AccessDenied(f"{action} {where} failed: access denied ({code})",
                                "check your AWS credentials and that they may use this bucket")
        return S3Error(f"{action} {where} failed: {code or status}: {msg}",
                       "retry; if it persists check the S3 endpoint and the bucket")
    if isinstance(exc, BotoCoreError):
        return S3Error(f"{action} {where} failed: {exc}",
                       "check the network and the S3 endpoint (AWS_ENDPOINT_URL_S3), then retry")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return DiskFull(f"{action} {where} failed: no space left on device", "free disk space and retry")
    return S3Error(f"{action} {where} failed: {exc}", "retry; run with --debug for details")


def snapshot_metadata(
    *,
    taken_at: datetime,
    cluster: str,
    sha256: str | None = None,
    size: int | None = None,
    revision: int | None = None,
    source: str = "dr.backup",
    member: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Object metadata recorded with every stored snapshot (dr.backup, the Lambda, a restore's safety copy): the
    plaintext's SHA-256 and size when known up front (a one-pass stream learns them at the end: tags). ``member``:
    ``Choice.record()`` of the etcd member it came from (several control-plane nodes)."""
    meta = {
        META_TAKEN_AT: iso_utc(taken_at),
        META_CLUSTER: cluster,
        META_SOURCE: source,
    }
    if sha256:
        meta[META_SHA256] = sha256
    if size is not None:
        meta[META_SIZE] = str(size)
    if revision is not None:
        meta[META_REVISION] = str(revision)
    if member:
        for key, field in ((META_MEMBER_NODE, "node"), (META_MEMBER_IP, "ip"), (META_MEMBER_ID, "id"),
                           (META_QUORUM, "quorum")):
            if member.get(field):  # S3 metadata is ASCII; a node name is the node's to choose
                meta[key] = member[field].encode("ascii", "replace").decode()[:200]
    return meta


def set_tags(client, bucket: str, key: str, tags: dict[str, str]) -> None:
    """Merge ``tags`` into the object's tags (S3 allows 10 per object)."""
    try:
        current = {t["Key"]: t["Value"] for t in client.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", [])}
        current.update(tags)
        client.put_object_tagging(
            Bucket=bucket, Key=key, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in sorted(current.items())]}
        )
    except ClientError as exc:
        raise translate(exc, "tagging", bucket, key) from exc


def drop_tags(client, bucket: str, key: str, prefix: str) -> list[str]:
    """Remove the object's tags whose keys start with ``prefix``, keeping every other (the tier stays, as the bucket
    policy requires); returns the keys removed."""
    try:
        current = {t["Key"]: t["Value"] for t in client.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", [])}
        gone = sorted(k for k in current if k.startswith(prefix))
        if gone:
            client.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": [
                {"Key": k, "Value": v} for k, v in sorted(current.items()) if k not in gone]})
    except ClientError as exc:
        raise translate(exc, "tagging", bucket, key) from exc
    return gone


class StoredChecksum:
    """The SHA-256 of an object's stored bytes as S3 records it at upload (and nobody can change afterwards): of the
    whole object (a PutObject or a copy), or composite: the SHA-256 of the parts' SHA-256s, with a ``-<parts>``
    suffix (a multipart upload; S3 User Guide, "Checking object integrity", composite checksums). Parts are taken
    ``part_size`` long, as ``ObjectWriter`` (and boto3's default transfer) cut them."""

    def __init__(self, part_size: int = PART_SIZE) -> None:
        import hashlib

        self._new = hashlib.sha256
        self.whole = hashlib.sha256()
        self.part_size = part_size
        self._part = hashlib.sha256()
        self._in_part = 0
        self._digests: list[bytes] = []

    def update(self, data: bytes) -> None:
        self.whole.update(data)
        while data:
            room = self.part_size - self._in_part
            piece, data = data[:room], data[room:]
            self._part.update(piece)
            self._in_part += len(piece)
            if self._in_part == self.part_size:
                self._digests.append(self._part.digest())
                self._part, self._in_part = self._new(), 0

    def check(self, recorded: str) -> bool | None:
        """True when ``recorded`` (HeadObject's ChecksumSHA256) is these bytes', False when it is not, None when it
        cannot be told (a composite of another number of parts than ``part_size`` gives)."""
        import base64

        digests = self._digests + ([self._part.digest()] if self._in_part or not self._digests else [])
        base, _, parts = recorded.partition("-")
        if base == base64.b64encode(self.whole.digest()).decode() and not parts:
            return True
        composite = base64.b64encode(self._new(b"".join(digests)).digest()).decode()
        if parts and parts.isdigit() and int(parts) != len(digests):
            return None
        return base == composite


def head_snapshot(client, bucket: str, key: str, *, with_tags: bool = True) -> ObjectInfo:
    """Size, metadata, S3 checksum and (optionally) tags of one object."""
    try:
        head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        tags: dict[str, str] = {}
        if with_tags:
            tagset = client.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", [])
            tags = {t["Key"]: t["Value"] for t in tagset}
    except ClientError as exc:
        raise translate(exc, "reading", bucket, key) from exc
    except BotoCoreError as exc:
        raise translate(exc, "reading", bucket, key) from exc
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=head["ContentLength"],
        last_modified=head["LastModified"],
        metadata=dict(head.get("Metadata") or {}),
        tags=tags,
        checksum_sha256=head.get("ChecksumSHA256"),
        version_id=head.get("VersionId"),
        etag=head.get("ETag"),
    )


def object_facts(info: ObjectInfo) -> dict[str, Any]:
    """Snapshot facts from metadata (set at upload) and tags (set after a streamed upload or a verification)."""
    merged = {**info.tags, **info.metadata}
    facts: dict[str, Any] = {}
    if META_REVISION in merged:
        facts["revision"] = int(merged[META_REVISION])
    elif TAG_VERIFIED_REVISION in merged:
        facts["revision"] = int(merged[TAG_VERIFIED_REVISION])
    for k in (META_SHA256, META_TAKEN_AT, META_CLUSTER, TAG_VERIFIED_AT, TAG_VERIFIED_KEYS):
        if k in merged:
            facts[k] = merged[k]
    return facts


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key). Refuses empty parts and path traversal (``..`` segments)."""
    from dr.core.errors import ConfigError

    if not uri.startswith("s3://"):
        raise ConfigError(f"not an S3 URI: {uri!r}", "use s3://<bucket>/<key>")
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket or not key or key.endswith("/"):
        raise ConfigError(f"S3 URI {uri!r} must name a bucket and an object key", "use s3://<bucket>/<key>")
    if any(seg in ("..", ".") for seg in key.split("/")) or "//" in key:
        raise ConfigError(f"S3 URI {uri!r} contains a '.' or '..' segment", "name the object's exact key")
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise ConfigError(f"S3 URI {uri!r} has an invalid bucket name {bucket!r}", "check the bucket name")
    return bucket, key


META_FORMAT = "snapshot-format"  # plain | zstd | age | zstd+age (dr.core.naming.format_name)
META_LATEST_OF = "latest-of"  # on <prefix>latest: the key of the snapshot it is a copy of
LATEST_NAME = "latest"  # <prefix>latest: the pinned server-side copy of the newest snapshot


class ObjectWriter:
    """Push-style upload of one object: ``write`` pieces, then ``commit`` (the object appears) or ``abort`` (nothing
    does). Small objects are one PutObject at commit; larger ones a multipart upload whose parts go out as they fill,
    at most ``max_in_flight`` at a time, so memory stays near PART_SIZE x (max_in_flight + 1) whatever the size.

    Every request carries a SHA-256 checksum (S3 checks it on arrival). ``if_none_match=True`` sends
    ``If-None-Match: *`` on the PutObject or CompleteMultipartUpload, so an existing key is never overwritten (S3
    answers 412 PreconditionFailed; AWS S3 User Guide, "Add preconditions to S3 operations with conditional
    requests")."""

    def __init__(self, client, bucket: str, key: str, metadata: dict[str, str], *, if_none_match: bool = True,
                 part_size: int = PART_SIZE, max_in_flight: int = 2, progress: ProgressFn | None = None,
                 tags: dict[str, str] | None = None):
        from concurrent.futures import ThreadPoolExecutor

        self.client, self.bucket, self.key = client, bucket, key
        self.metadata = metadata
        # Tags set with the object itself (x-amz-tagging), so a lifecycle rule filtering on them never sees it untagged.
        self._tagging = {"Tagging": urlencode(sorted(tags.items()))} if tags else {}
        self.if_none_match = if_none_match
        self.part_size = part_size
        self.progress = progress
        self.size = 0
        self._buf: list[bytes] = []
        self._buffered = 0
        self._upload_id: str | None = None
        self._parts: list[Any] = []  # futures, in part order
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="s3-part")
        self._max_in_flight = max_in_flight
        self._done = False
        self.version_id: str | None = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        while data:
            # A piece that crosses the part boundary is split there, so a part is joined once and never sliced
            # (slicing a joined part held two copies of it).
            room = self.part_size - self._buffered
            piece, data = (data, b"") if len(data) <= room else (data[:room], data[room:])
            self._buf.append(piece)
            self._buffered += len(piece)
            if self._buffered >= self.part_size:
                self._send_part(self._take(self.part_size))

    def _take(self, n: int) -> bytes:
        data = b"".join(self._buf)
        if len(data) == n:  # the usual case for whole chunks: no second copy of the part
            self._buf, self._buffered = [], 0
            return data
        self._buf = [data[n:]] if len(data) > n else []
        self._buffered = len(data) - min(n, len(data))
        return data[:n]

    def _send_part(self, body: bytes) -> None:
        try:
            if self._upload_id is None:
                resp = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key, Metadata=self.metadata,
                                                           ChecksumAlgorithm="SHA256", **self._tagging)
                self._upload_id = resp["UploadId"]
            # Bounded: wait for the oldest part still in flight before queueing another.
            pending = [f for f in self._parts if not f.done()]
            if len(pending) >= self._max_in_flight:
                pending[0].result()
            n = len(self._parts) + 1
            self._parts.append(self._pool.submit(self._upload_part, n, body))
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, "upload to", self.bucket, self.key) from exc

    def _upload_part(self, n: int, body: bytes) -> dict[str, Any]:
        resp = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, PartNumber=n,
                                       Body=body, ChecksumAlgorithm="SHA256")
        if self.progress and not self._done:  # nothing more to report once aborted
            self.progress(len(body))
        return {"PartNumber": n, "ETag": resp["ETag"], "ChecksumSHA256": resp.get("ChecksumSHA256")}

    def commit(self) -> None:
        """Send what is left and complete the object. Raises a ``DRError`` (the upload is then aborted)."""
        cond = {"IfNoneMatch": "*"} if self.if_none_match else {}
        try:
            try:
                if self._upload_id is None:
                    body = self._take(self._buffered)
                    resp = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, Metadata=self.metadata,
                                                  ChecksumAlgorithm="SHA256", **cond, **self._tagging)
                    if self.progress:
                        self.progress(len(body))
                else:
                    if self._buffered:
                        self._send_part(self._take(self._buffered))
                    parts = [f.result() for f in self._parts]
                    for p in parts:
                        if p["ChecksumSHA256"] is None:
                            del p["ChecksumSHA256"]
                    resp = self.client.complete_multipart_upload(
                        Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, MultipartUpload={"Parts": parts},
                        **cond)
            except ClientError as exc:
                err = exc.response.get("Error", {})
                if str(err.get("Code")) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                    # The same error a local store gives (fsutil.atomic_writer, overwrite=False): ConfigError.
                    raise ConfigError(f"s3://{self.bucket}/{self.key} already exists; it was not overwritten",
                                      "every snapshot gets a new name: take the snapshot again") from exc
                raise translate(exc, "upload to", self.bucket, self.key) from exc
            except BotoCoreError as exc:
                raise translate(exc, "upload to", self.bucket, self.key) from exc
        except BaseException:
            self.abort()
            raise
        self.version_id = resp.get("VersionId")
        self._done = True
        self._pool.shutdown(wait=True)

    def abort(self) -> None:
        """Drop everything sent so far (idempotent; a failure to abort is left to the bucket's abort-incomplete rule)."""
        if self._done:
            return
        self._done = True
        for f in self._parts:
            f.cancel()
        try:
            self._pool.shutdown(wait=True, cancel_futures=True)  # a part in flight finishes (or fails) first
        finally:  # even when a second Ctrl-C lands while waiting for it
            if self._upload_id is not None:
                try:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id)
                except (ClientError, BotoCoreError):
                    pass
