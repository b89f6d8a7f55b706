"""Snapshot stores: one protocol, a local folder and an S3 prefix behind it (restic's backend interface and gardener's
snapstore are the models). Commands list, stat, fetch, put and record verifications through it and never branch on
where a snapshot lives; tests/adapters/test_store_contract.py runs one contract suite against both.

- ``protocol``: ``SnapshotStore`` with each method's contract, ``Entry``, ``Verification``, name lookups;
- ``local`` / ``s3``: the two backends;
- ``transfer``: the codec orchestration (``put``'s trailer check, ``fetch``/``decode_to``);
- ``selection``: which snapshot ``latest``/``latest~N`` names (``newest``);
- ``factory``: ``open_store``, the one way a command gets a store.

Formats are the store's business: ``put`` takes plaintext chunks and stores them plain, zstd-compressed and/or
age-encrypted (``dr.adapters.codec``), checking the etcd hash trailer on the plaintext as it streams, and nothing
becomes visible unless the trailer matches (a ``.part`` renamed, or a multipart upload completed). ``fetch`` undoes
the layers the content carries and checks the trailer again, into a local ``.part`` renamed at the end.

Names: every entry is listed under its stored name (``etcd-snapshot-<ts>.db.zst.age``,
``<cluster>-<RFC3339>.snap``...); ``stat`` and ``find`` accept the stored name or the plain name it decodes to.

This module re-exports the names callers use: ``from dr.adapters.store import X`` is the package's public surface.
"""

from dr.adapters.store.factory import S3Prefix, open_store
from dr.adapters.store.local import LocalStore, file_sha256
from dr.adapters.store.protocol import (
    CATALOG_NAME,
    LOCAL,
    S3,
    Entry,
    SnapshotStore,
    Verification,
    find,
    newest_first,
    not_found,
)
from dr.adapters.store.s3 import TAG_VERIFIED_SHA256, S3Store
from dr.adapters.store.selection import (
    FUTURE_SLACK,
    candidates,
    latest_steps,
    named_after_upload,
    newest,
    suspicious,
)
from dr.adapters.store.transfer import decode_to, fetch, provenance_warnings

__all__ = [
    "CATALOG_NAME", "FUTURE_SLACK", "LOCAL", "S3", "TAG_VERIFIED_SHA256", "Entry", "LocalStore", "S3Prefix", "S3Store",
    "SnapshotStore", "Verification", "candidates", "decode_to", "fetch", "file_sha256", "find", "latest_steps",
    "named_after_upload", "newest", "newest_first", "not_found", "open_store", "provenance_warnings", "suspicious",
]
