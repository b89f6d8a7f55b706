"""LocalSecretFile: a secret written to a local file (mode 0600) and rewritten by `pulumi up` when it goes missing.

Pulumi serializes the provider with dill into state, by reference to this module: the dynamic-provider process
imports ``infra.providers.secret_file``, so this module creates nothing at import time and holds no unpicklable globals.
Outputs carry only the path and a SHA-256 of the content; the content itself is a secret input.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)

from dr.adapters.fsutil import atomic_write

FILE_MODE = 0o600
DIR_MODE = 0o700


def sha256_text(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def file_sha256(path: str) -> str | None:
    """The SHA-256 of the file's bytes, or None when it is missing or unreadable."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def write_secret_file(path: str, content: str) -> None:
    """Write ``content`` to ``path`` atomically, mode 0600 from the first byte (``dr.adapters.fsutil.atomic_write``:
    a unique O_EXCL|O_NOFOLLOW temporary file, fsync, rename, fsync of the folder; a symlink at ``path`` is refused)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    atomic_write(target, content, mode=FILE_MODE)


class LocalSecretFileProvider(ResourceProvider):
    """Dynamic provider for ``LocalSecretFile``. Stateless: every method works from its arguments alone."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = []
        if not isinstance(news.get("path"), str) or not news.get("path"):
            failures.append(CheckFailure("path", "path must be a non-empty string"))
        if not isinstance(news.get("content"), str):
            failures.append(CheckFailure("content", "content must be a string"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        path, content = news["path"], news["content"]
        replaces = ["path"] if olds.get("path") != path else []
        # The file on disk is the real state: a deleted or edited .talos/ file is a change to repair.
        on_disk = file_sha256(path)
        changed = bool(replaces) or on_disk != sha256_text(content)
        return DiffResult(changes=changed, replaces=replaces, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        path, content = props["path"], props["content"]
        write_secret_file(path, content)
        return CreateResult(id_=path, outs={"path": path, "sha256": sha256_text(content)})

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        write_secret_file(news["path"], news["content"])
        return UpdateResult(outs={"path": news["path"], "sha256": sha256_text(news["content"])})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(props["path"])

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        # Report what is on disk, so `pulumi refresh` shows a missing or edited file as drift.
        return ReadResult(id_=id_, outs={"path": props.get("path", id_), "sha256": file_sha256(id_)})


class LocalSecretFile(pulumi.dynamic.Resource):
    """A secret file on the machine running `pulumi up` (e.g. ``.talos/talosconfig``), mode 0600."""

    path: pulumi.Output[str]
    sha256: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        path: pulumi.Input[str],
        content: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__(
            LocalSecretFileProvider(),
            name,
            # The content input is stored as a secret; outputs hold only its hash.
            {"path": path, "content": pulumi.Output.secret(content), "sha256": None},
            opts,
        )
