"""One DR operation at a time per `.talos/` directory: an advisory lock on a file, released by the kernel when the
process dies (no stale lock after SIGKILL)."""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dr.adapters.fsutil import open_private
from dr.core.errors import ConfigError, Locked


@contextmanager
def exclusive(path: Path, what: str, wait: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block. Waits up to ``wait`` seconds, then raises ``Locked``
    naming the holder's pid and operation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Never through a symlink (it would be truncated below), never a FIFO or device (open would block or worse).
    fd = open_private(path, os.O_RDWR | os.O_NONBLOCK, "lock file",
                      f"remove it (`rm {path}`): the lock file is created again on the next run")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"lock file {path} is not a regular file", f"remove it (`rm {path}`)")
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                    raise Locked(
                        f"cannot start {what}: {holder} holds {path}",
                        "wait for it to finish (or pass --wait-lock SECONDS); the lock frees itself if that process dies",
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{what} (pid {os.getpid()})".encode(), 0)
        yield
    finally:
        os.close(fd)
