"""Where a snapshot comes from, and the verified plain local file it becomes. Used by restore and verify.

A snapshot can be named as:
- a local path: a plain snapshot is verified in place; a compressed or encrypted one (``.db.zst.age``, a talos-backup
  ``.snap.zst.age``...) is decoded into ``dest_dir`` first;
- ``s3://bucket/key``;
- ``latest``: the newest snapshot in the stack's bucket under the prefix (safety snapshots excluded);
- a name as ``dr.list`` prints it (stored or plain): looked up in the local folder, its downloads, then the bucket.

Whatever the source, the result is a plain local file whose hash trailer checks, through ``dr.adapters.store``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from dr.adapters import s3
from dr.adapters.codec import Layers, describe_head
from dr.adapters.store import Entry, LocalStore, S3Store, SnapshotStore, newest_first
from dr.adapters.store import fetch as store_fetch
from dr.commands import cli
from dr.commands.settings import Resolver
from dr.core import naming
from dr.core.errors import ConfigError, IntegrityError, SnapshotNotFound
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
        raise SnapshotNotFound(f"snapshot file {path} does not exist", "list snapshots with `python -m dr.list`")
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


def newest(store: SnapshotStore) -> Entry:
    snaps = [e for e in store.list() if not e.name.safety]
    if not snaps:
        raise SnapshotNotFound(f"there are no snapshots in {store.where}",
                               "take one with `python -m dr.backup --save-to-s3`, name a local file, or pass --prefix "
                               "where they are")
    return newest_first(snaps)[0]


def resolve(spec: str, r: Resolver) -> tuple[SnapshotStore, Entry]:
    """The store and entry ``spec`` names (``latest``, ``s3://``, or a listed name); local paths are not resolved here."""
    if spec == LATEST:
        store = r.s3_store()
        return store, store.describe(newest(store))
    if spec.startswith("s3://"):
        bucket, key = s3.parse_s3_uri(spec)
        prefix = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
        store = S3Store(r.s3_client(), bucket, prefix)
        if naming.parse(key) is None:
            # Not a snapshot name: read it anyway (the content decides), under the object's own facts.
            info = s3.head_snapshot(store.client, bucket, key)
            entry = Entry("s3", naming.SnapshotName(key.rsplit("/", 1)[-1], key.rsplit("/", 1)[-1], info.last_modified,
                                                    "unknown"),
                          spec, info.size, info.last_modified, key=key, described=True,
                          sha256=info.metadata.get(s3.META_SHA256))
            return store, entry
        return store, store.stat(key)
    for store in (r.local_store(), r.downloads_store()):
        try:
            return store, store.stat(spec)
        except SnapshotNotFound:
            continue
    s3_store = r.s3_store()
    return s3_store, s3_store.stat(spec)


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
    if spec != LATEST and not spec.startswith("s3://"):
        if "://" in spec:
            raise ConfigError(f"unsupported snapshot location {spec!r}", "use a local path, s3://bucket/key or latest")
        path = Path(spec)
        if path.exists() or path.is_symlink() or "/" in spec or naming.parse(spec) is None:
            return _local(check_local_file(path), r, dest_dir, err)
    store, entry = resolve(spec, r)
    if isinstance(store, LocalStore) and entry.path is not None:
        return _local(entry.path, r, dest_dir, err)
    return _download(store, entry, r, dest_dir, err)


def _local(path: Path, r: Resolver, dest_dir: Path, err: TextIO) -> Fetched:
    head = _head(path)
    layer = describe_head(head)
    if layer is None:
        before = os.stat(path)
        return Fetched(path, str(path), verify_file(path), stat_before=before)
    # A compressed or encrypted local file: decode it next to the downloads, under its plain name.
    parsed = naming.parse(path.name)
    st = path.stat()
    from datetime import UTC, datetime

    name = parsed or naming.SnapshotName(path.name, local_name_for(path.name),
                                         datetime.fromtimestamp(st.st_mtime, UTC), "unknown")
    entry = Entry("local", name, str(path), st.st_size, datetime.fromtimestamp(st.st_mtime, UTC), path=path)
    return _download(LocalStore(path.parent), entry, r, dest_dir, err)


def _download(store: SnapshotStore, entry: Entry, r: Resolver, dest_dir: Path, err: TextIO) -> Fetched:
    dest_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest = dest_dir / local_name_for(entry.name.name)
    reused = _reuse(dest, entry, err)
    if reused is not None:
        return Fetched(dest, entry.location, reused, entry, store, False)
    verb = "downloading" if store.kind == "s3" else "decoding"
    progress = cli.Progress(f"{verb} {entry.location}", entry.size, err)
    digest, layers = store_fetch(store, entry, dest, identities=r.identities, progress=progress, overwrite=True)
    progress.finish()
    if layers.encrypted or layers.compressed:
        print(f"{entry.location} was {layers.format}; decoded and verified into {dest}", file=err)
    return Fetched(dest, entry.location, digest, entry, store, True, layers)
