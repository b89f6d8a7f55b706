"""The one way a command gets a snapshot store: ``open_store`` with a folder or an ``S3Prefix``. A new backend gets
its own ``where`` type and a branch here, and every command that takes a store reaches it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from dr.adapters.store.local import LocalStore
from dr.adapters.store.s3 import S3Store


@dataclass(frozen=True)
class S3Prefix:
    """Snapshots under ``prefix`` (ending in ``/``, or empty) in ``bucket``."""

    bucket: str
    prefix: str


@overload
def open_store(where: Path, client: None = None) -> LocalStore: ...
@overload
def open_store(where: S3Prefix, client: Any) -> S3Store: ...


def open_store(where: Path | S3Prefix, client: Any = None) -> LocalStore | S3Store:
    """The store at ``where``: a local folder (created on the first ``put``, never before), or an S3 prefix read and
    written with ``client`` (a boto3 S3 client). Opening touches nothing: the first call on the store does."""
    if isinstance(where, S3Prefix):
        if client is None:
            raise TypeError("an S3 store needs an S3 client")
        return S3Store(client, where.bucket, where.prefix)
    return LocalStore(Path(where))
