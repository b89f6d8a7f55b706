"""One atomic write for every file this project writes: a temporary file next to the target, fsync, rename, fsync of
the folder. A crash or Ctrl-C leaves either the old file or the new one, never half of one, and no temporary file.

The temporary file is ``NAME.<random>.part``, created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` and its final mode from the
first byte: a stale file or a planted symlink at that name is never reused or followed (fs.protected_symlinks may be
0). The target itself is refused when it is a symlink, and with ``overwrite=False`` when it exists (the rename is then
a ``link``, which fails if the name appeared meanwhile). Names end in ``.part`` so the sweeps of interrupted runs
(``dr.commands.backup.clean_partials``) and the tests that look for leftovers see them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dr.core.errors import ConfigError

PART_SUFFIX = ".part"


def _refuse_unsafe_target(target: Path, overwrite: bool) -> None:
    if target.is_symlink():
        raise ConfigError(f"refusing to write {target}: it is a symbolic link",
                          f"remove the link (`rm {target}`) or point the command at the real file")
    if not overwrite and target.exists():
        raise ConfigError(f"refusing to overwrite {target}: it already exists", f"move {target} away first")


def open_private(path: Path, flags: int, what: str, hint: str) -> int:
    """``os.open(path, flags | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)``, refusing a symlink with one line: a file
    this program keeps private is never opened through a link someone planted. Returns the descriptor."""
    import errno

    try:
        return os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise ConfigError(f"{what} {path} is a symbolic link; refusing to open it", hint) from None


STATE_FILE_LIMIT = 16 * 1024 * 1024  # no journal or catalog of ours comes near this


def read_state_file(path: Path, what: str, limit: int = STATE_FILE_LIMIT) -> str | None:
    """The text of a state file of ours (``.verified.json``, the restore journal), or None when there is none.

    Opened ``O_NOFOLLOW|O_NONBLOCK`` and checked with fstat to be a regular file before a byte is read: a FIFO would
    block the open (or the read) for ever, a device would read for ever, a link would lead elsewhere (hostile-inputs
    33-34). Any of those, or a file over ``limit`` bytes, is a ``LocalPathError`` saying what to remove."""
    import errno
    import stat

    from dr.core.errors import LocalPathError

    hint = f"it is not a file this program wrote: look at it, then move it away (`mv {path} {path}.bad`) and retry"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LocalPathError(f"{what} {path} is a symbolic link", hint) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode)
                    else "a device or socket")
            raise LocalPathError(f"{what} {path} is {kind}, not a regular file", hint)
        if st.st_size > limit:
            raise LocalPathError(f"{what} {path} is {st.st_size} bytes, more than any such file of ours ({limit})",
                                 hint)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise LocalPathError(f"{what} {path} grew past {limit} bytes while read", hint)
    return data.decode("utf-8", errors="replace")


def sync_folder(folder: Path) -> None:
    """Make a rename (or unlink) in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temp(target: Path, mode: int) -> tuple[Path, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = target.with_name(f"{target.name}.{secrets.token_hex(4)}{PART_SUFFIX}")
        try:
            fd = os.open(tmp, flags, mode)
        except FileExistsError:  # a stale or planted file (or symlink) at that name: never touch it, pick another
            continue
        try:
            os.fchmod(fd, mode)  # exactly ``mode`` (the umask may have removed bits), before the first byte
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return tmp, fd


def commit(tmp: Path, target: Path, *, overwrite: bool = True, fsync_dir: bool = True) -> None:
    """Rename an already written and fsynced ``tmp`` onto ``target`` (same folder), with the same refusals as
    ``atomic_write``. For files another program wrote (talosctl's ``NAME.part``); ``tmp`` is left for the caller to
    remove when this raises."""
    _refuse_unsafe_target(target, overwrite)
    if overwrite:
        os.replace(tmp, target)
    else:
        try:
            os.link(tmp, target, follow_symlinks=False)
        except FileExistsError:
            raise ConfigError(f"refusing to overwrite {target}: it already exists", f"move {target} away first") from None
        tmp.unlink()
    if fsync_dir:
        sync_folder(target.parent)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], *, mode: int = 0o600, overwrite: bool = True,
                  fsync_dir: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes ``path`` when the block exits cleanly (flush, fsync, rename, fsync of the
    folder). Any exception in the block (a failed check included) or Ctrl-C removes the temporary file and leaves
    ``path`` as it was."""
    target = Path(path)
    _refuse_unsafe_target(target, overwrite)
    tmp, fd = _create_temp(target, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        commit(tmp, target, overwrite=overwrite, fsync_dir=fsync_dir)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o600, overwrite: bool = True,
                 fsync_dir: bool = True) -> Path:
    """Write ``data`` (str is UTF-8 encoded) to ``path`` atomically, mode ``mode`` from the first byte."""
    with atomic_writer(path, mode=mode, overwrite=overwrite, fsync_dir=fsync_dir) as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)
