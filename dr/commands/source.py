"""Where a snapshot comes from: a local path, ``s3://bucket/key``, or ``latest`` (the newest in the stack's bucket).

Used by restore and verify. A remote snapshot is downloaded to a local folder through ``.part`` and verified; a local
one is verified in place. Whatever the source, the result is a local file whose hash trailer checks.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from dr.adapters import s3
from dr.commands import cli
from dr.commands.settings import Resolver
from dr.core.errors import ConfigError, IntegrityError, SnapshotNotFound
from dr.core.integrity import SnapshotDigest, verify_file

LATEST = "latest"


@dataclass(frozen=True)
class Fetched:
    path: Path  # local, verified snapshot file
    origin: str  # what the user named, resolved (path or s3 URI)
    digest: SnapshotDigest
    bucket: str | None = None
    key: str | None = None
    info: s3.ObjectInfo | None = None
    downloaded: bool = False


def check_local_file(path: Path) -> Path:
    """A snapshot named on the command line must be a regular file: not missing, not a link, not a directory."""
    if path.is_symlink():
        raise ConfigError(f"{path} is a symbolic link", "name the snapshot file itself, not a link to it")
    if not path.exists():
        raise SnapshotNotFound(f"snapshot file {path} does not exist", "list snapshots with `python -m dr.list`")
    if not path.is_file():
        raise ConfigError(f"{path} is not a regular file", "name a snapshot file (etcd-snapshot-*.db)")
    return path


def local_name_for(key: str) -> str:
    """A safe local file name for an object key (no separators, no shell metacharacters)."""
    name = key.rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "snapshot.db"
    return name


def resolve_remote(spec: str, r: Resolver) -> tuple[str, str]:
    """(bucket, key) for ``latest`` or an S3 URI."""
    if spec == LATEST:
        bucket = r.bucket
        snaps = s3.list_snapshots(r.s3_client(), bucket, r.prefix)
        if not snaps:
            raise SnapshotNotFound(f"there are no snapshots in s3://{bucket}/{r.prefix}",
                                   "take one with `python -m dr.backup --save-to-s3`, or name a local file")
        return bucket, snaps[0].key
    return s3.parse_s3_uri(spec)


def _object_matches(info: s3.ObjectInfo, digest: SnapshotDigest) -> bool:
    recorded = info.metadata.get(s3.META_SHA256)
    if recorded:
        return recorded == digest.content_sha256
    checksum = info.checksum_sha256
    if checksum and "-" not in checksum:
        return checksum == base64.b64encode(bytes.fromhex(digest.file_sha256)).decode()
    return False


def fetch(spec: str, r: Resolver, dest_dir: Path, err: TextIO) -> Fetched:
    """Resolve ``spec`` to a verified local snapshot, downloading it into ``dest_dir`` when remote.

    A previous download of the same object that still verifies is reused (so a re-run does not download again).
    """
    if spec != LATEST and not spec.startswith("s3://"):
        if "://" in spec:
            raise ConfigError(f"unsupported snapshot location {spec!r}", "use a local path, s3://bucket/key or latest")
        path = check_local_file(Path(spec))
        return Fetched(path, str(path), verify_file(path))
    bucket, key = resolve_remote(spec, r)
    client = r.s3_client()
    dest_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest = dest_dir / local_name_for(key)
    info = s3.head_snapshot(client, bucket, key, with_tags=False)
    if dest.is_file() and not dest.is_symlink() and dest.stat().st_size == info.size:
        # Reuse an earlier download only when the object itself vouches for it (the SHA-256 recorded at upload,
        # or S3's full-object checksum): a same-named local file says nothing about what is in the bucket now.
        try:
            digest = verify_file(dest)
        except IntegrityError:
            digest = None  # a damaged earlier copy: download again over it
        if digest is not None and _object_matches(info, digest):
            print(f"using {dest}, already downloaded from s3://{bucket}/{key} (same SHA-256)", file=err)
            return Fetched(dest, f"s3://{bucket}/{key}", digest, bucket, key, info, False)
    progress = cli.Progress(f"downloading s3://{bucket}/{key}", info.size, err)
    digest, info = s3.download_snapshot(client, bucket, key, dest, progress=progress)
    progress.finish()
    return Fetched(dest, f"s3://{bucket}/{key}", digest, bucket, key, info, True)
