"""Where a snapshot comes from, and the verified plain local file it becomes. Used by restore and verify.

A snapshot can be named as:
- a local path: a plain snapshot is verified in place; a compressed or encrypted one (``.db.zst.age``, a talos-backup
  ``.snap.zst.age``...) is decoded into ``dest_dir`` first;
- ``s3://bucket/key``;
- ``latest``: the newest snapshot in the stack's bucket under the prefix, by evidence (see ``newest``; safety
  snapshots excluded); ``latest~N`` the Nth before it; ``latest-verified`` the newest with a standing verification;
- a name as ``dr.list`` prints it (stored or plain): looked up in the local folder, its downloads, then the bucket.

Whatever the source, the result is a plain local file whose hash trailer checks, through ``dr.adapters.store``.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from dr.adapters import s3
from dr.adapters.codec import Layers, describe_head
from dr.adapters.store import Entry, LocalStore, S3Prefix, S3Store, SnapshotStore, candidates, newest, open_store
from dr.adapters.store import fetch as store_fetch
from dr.commands import cli
from dr.commands.settings import Resolver
from dr.core import naming, spelling
from dr.core.errors import (
    BucketNotFound,
    ConfigError,
    DiskFull,
    DRError,
    IntegrityError,
    S3Error,
    SnapshotNotFound,
)
from dr.core.formats import SNIFF_BYTES
from dr.core.integrity import SnapshotDigest, verify_file

LATEST = "latest"


@dataclass(frozen=True)
class Fetched:
    path: Path  # local, verified, plain snapshot file
    origin: str  # what the user named, resolved (path or s3 URI)
    digest: SnapshotDigest
    entry: Entry | None = None  # the stored snapshot it came from (None: a plain local file used in place)
    store: SnapshotStore | None = None
    downloaded: bool = False
    layers: Layers = Layers()
    stat_before: os.stat_result | None = None  # of a file used in place, taken before its bytes were hashed

    @property
    def bucket(self) -> str | None:
        return self.store.bucket if isinstance(self.store, S3Store) else None

    @property
    def key(self) -> str | None:
        return self.entry.key if self.entry is not None else None


def check_local_file(path: Path) -> Path:
    """A snapshot named on the command line must be a regular file: not missing, not a link, not a directory."""
    if path.is_symlink():
        raise ConfigError(f"{path} is a symbolic link", "name the snapshot file itself, not a link to it")
    if not path.exists():
        raise SnapshotNotFound(f"snapshot file {path} does not exist",
                               f"list snapshots with `{spelling.command('list')}`")
    if not path.is_file():
        raise ConfigError(f"{path} is not a regular file", "name a snapshot file (etcd-snapshot-*.db)")
    return path


def local_name_for(name: str) -> str:
    """A safe local file name for a stored snapshot's plain form (no separators, no shell metacharacters; the ':' of
    a talos-backup RFC 3339 time is kept, so the name still says when it was taken)."""
    parsed = naming.parse(name)
    base = parsed.plain if parsed else name.rsplit("/", 1)[-1]
    for suffix in (naming.ENCRYPTED_SUFFIX, naming.COMPRESSED_SUFFIX):
        if parsed is None and base.endswith(suffix):
            base = base[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9._:+-]", "_", base).lstrip(".") or "snapshot.db"


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(SNIFF_BYTES)


DEFAULT_MAX_BYTES = 16 * 1024**3  # no etcd database is this big (etcd's own quota tops out at 8 GiB)
ENV_MAX_BYTES = "DR_MAX_SNAPSHOT_BYTES"


_LATEST_RE = re.compile(r"^latest(?:~(\d+))?$|^latest-verified$")


def parse_latest(spec: str) -> tuple[int, bool] | None:
    """``latest`` → (0, False), ``latest~2`` → (2, False), ``latest-verified`` → (0, True); None otherwise."""
    m = _LATEST_RE.match(spec)
    if not m:
        return None
    if spec == "latest-verified":
        return 0, True
    return int(m.group(1) or 0), False


def _known_cluster(r: Resolver) -> str | None:
    try:
        c = r.cluster
    except DRError:
        return None
    return None if c == "unknown" else c


known_cluster = _known_cluster  # the stack's cluster when it is known (dr.commands.verify.prove checks against it)


def resolve(spec: str, r: Resolver, err: TextIO | None = None) -> tuple[SnapshotStore, Entry]:
    """The store and entry ``spec`` names (``latest``, ``s3://``, or a listed name); local paths are not resolved here."""
    which = parse_latest(spec)
    if which is not None:
        store = r.s3_store()
        skip, verified_only = which
        return store, newest(store, cluster=_known_cluster(r), err=err, skip=skip, verified_only=verified_only)
    if spec.startswith("s3://"):
        bucket, key = s3.parse_s3_uri(spec)
        prefix = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
        store = open_store(S3Prefix(bucket, prefix), r.s3_client())
        try:
            return store, _s3_entry(store, spec, key)
        except BucketNotFound as exc:
            raise _with_configured_bucket(exc, bucket, r) from None
        except SnapshotNotFound:
            # A HEAD of a key in a missing bucket is a bare 404, like a missing key: ask the bucket itself, so
            # a missing bucket says so (14) instead of "no such object" (4).
            try:
                store.client.list_objects_v2(Bucket=bucket, MaxKeys=1)
            except Exception as exc:  # noqa: BLE001 - translated to the matching DRError
                raise _with_configured_bucket(s3.translate(exc, "listing", bucket), bucket, r) from exc
            raise
    for store in (r.local_store(), r.downloads_store()):
        try:
            return store, store.stat(spec)
        except SnapshotNotFound:
            continue
    s3_store = r.s3_store()
    return s3_store, s3_store.stat(spec)


def _with_configured_bucket(exc: DRError, typed: str, r: Resolver) -> DRError:
    """A missing bucket's error names the configured one too, when it is known and differs (a typo is the usual
    cause)."""
    if isinstance(exc, BucketNotFound):
        try:
            configured = r.bucket
        except DRError:
            return exc
        if configured != typed:
            exc.hint = f"the stack's bucket is {configured}; " + (exc.hint or "")
    return exc


def _s3_entry(store: S3Store, spec: str, key: str) -> Entry:
    if naming.parse(key) is None:
        # Not a snapshot name: read it anyway (the content decides), under the object's own facts; its time is when
        # S3 stored it.
        base = key.rsplit("/", 1)[-1]
        e = store.head(key, naming.SnapshotName(base, base, datetime.now(UTC), "unknown"))
        return replace(e, name=replace(e.name, taken_at=e.modified))
    return store.stat(key)


def _reuse(dest: Path, entry: Entry, err: TextIO) -> SnapshotDigest | None:
    """An earlier download at ``dest`` that the stored snapshot vouches for (its recorded SHA-256), else None. A
    different valid snapshot already there is never overwritten."""
    if not dest.exists() and not dest.is_symlink():
        return None
    if dest.is_symlink() or not dest.is_file():
        raise ConfigError(f"{dest} exists and is not a regular file", f"move it out of {dest.parent} and retry")
    try:
        digest = verify_file(dest)
    except IntegrityError:
        return None  # a damaged earlier download of ours: replaced by a good one
    if entry.sha256 and entry.sha256 == digest.content_sha256:
        print(f"using {dest}, already downloaded from {entry.location} (same SHA-256)", file=err)
        return digest
    raise ConfigError(f"{dest} already holds a different snapshot than {entry.location} (SHA-256 "
                      f"{digest.content_sha256[:16]}…{', not ' + entry.sha256[:16] + '…' if entry.sha256 else ''})",
                      f"it was not overwritten: move it out of {dest.parent}, or restore it by its path")


def fetch(spec: str, r: Resolver, dest_dir: Path, err: TextIO) -> Fetched:
    """Resolve ``spec`` to a verified plain local snapshot, decoding or downloading into ``dest_dir`` when needed."""
    if parse_latest(spec) is None and not spec.startswith("s3://"):
        if "://" in spec:
            raise ConfigError(f"unsupported snapshot location {spec!r}", "use a local path, s3://bucket/key or latest")
        if spec.lower().startswith("s3:/") and not Path(spec).exists():  # one slash short: not a local file
            raise ConfigError(f"{spec!r} is not an S3 URI (one slash after s3:)",
                              f"did you mean s3://{spec[4:].lstrip('/')}?")
        path = Path(spec)
        if path.exists() or path.is_symlink() or "/" in spec or naming.parse(spec) is None:
            return _local(check_local_file(path), r, dest_dir, err)
    store, entry = resolve(spec, r, err)
    if isinstance(store, LocalStore) and entry.path is not None:
        return _local(entry.path, r, dest_dir, err)
    try:
        return _download(store, entry, r, dest_dir, err)
    except IntegrityError as exc:
        which = parse_latest(spec)
        if which is not None and not which[1]:
            # One bad newest object must not leave "take a new snapshot" as the only advice .
            older = len(candidates(store.list())) > which[0] + 1
            exc.hint = (f"use the one before it: `latest~{which[0] + 1}` (`{spelling.command('list')}` marks it)"
                        if older else f"there is no older one in {store.where}: restore a local copy by name "
                        f"(`{spelling.command('list')}`), or take a new backup if the cluster is healthy")
        raise


def _local(path: Path, r: Resolver, dest_dir: Path, err: TextIO) -> Fetched:
    head = _head(path)
    layer = describe_head(head)
    if layer is None:
        before = os.stat(path)
        return Fetched(path, str(path), verify_file(path), stat_before=before)
    # A compressed or encrypted local file: decode it next to the downloads, under its plain name.
    store = open_store(path.parent)
    name = naming.parse(path.name) or naming.SnapshotName(
        path.name, local_name_for(path.name), datetime.fromtimestamp(path.stat().st_mtime, UTC), "unknown")
    return _download(store, store.entry(path, name), r, dest_dir, err)


def max_bytes(r: Resolver) -> int:
    raw = r.env.get(ENV_MAX_BYTES)
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{ENV_MAX_BYTES}={raw!r} is not a number of bytes", f"unset it or set e.g. {ENV_MAX_BYTES}="
                          f"{DEFAULT_MAX_BYTES}") from None
    return value


def check_room(entry: Entry, dest_dir: Path, r: Resolver) -> None:
    """Refuse, before a byte is fetched, an object bigger than any etcd database (a 1 PiB size in a HEAD
    would otherwise be fetched until the disk fills), or one the disk cannot hold (the plaintext's size when recorded,
    else the stored size)."""
    cap = max_bytes(r)
    size = max(entry.size, entry.plain_size or 0)
    if size > cap:
        raise S3Error(f"{entry.location} says it is {cli.human_size(size)}, more than any etcd snapshot "
                      f"({cli.human_size(cap)} allowed); it was not downloaded",
                      f"check the object; raise {ENV_MAX_BYTES} if it really is that big")
    free = shutil.disk_usage(dest_dir).free
    if size > free:
        raise DiskFull(f"no space left for {entry.location}: it needs {cli.human_size(size)} but only "
                       f"{cli.human_size(free)} is free in {dest_dir}; nothing was downloaded",
                       "free space there, or point --talos-dir / --tmp-dir elsewhere")


def _download(store: SnapshotStore, entry: Entry, r: Resolver, dest_dir: Path, err: TextIO) -> Fetched:
    dest_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest = dest_dir / local_name_for(entry.name.name)
    reused = _reuse(dest, entry, err)
    if reused is not None:
        return Fetched(dest, entry.location, reused, entry, store, False)
    check_room(entry, dest_dir, r)
    verb = "downloading" if store.kind == "s3" else "decoding"
    progress = cli.Progress(f"{verb} {entry.location}", entry.size, err)
    digest, layers = store_fetch(store, entry, dest, identities=r.identities, progress=progress, overwrite=True,
                                 warn=lambda line: print(f"warning: {line}", file=err),
                                 max_plain=max_bytes(r))
    progress.finish()
    if layers.encrypted or layers.compressed:
        print(f"{entry.location} was {layers.format}; decoded and verified into {dest}", file=err)
    return Fetched(dest, entry.location, digest, entry, store, True, layers)
