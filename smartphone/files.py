"""Files that are either whole or absent: atomic writes for the simulators' state.

A write goes to a temporary file in the same directory, is flushed to disk, and then replaces
the target with ``os.replace`` (atomic on POSIX), so a crash leaves the old file or the new one,
never half of either. A new directory is built under a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["AlreadyExists", "CorruptState", "locked", "new_directory", "write_atomically"]


class AlreadyExists(FileExistsError):
    """The file or directory to create is already there; nothing was overwritten."""


class CorruptState(ValueError):
    """A stored file is not what the simulator wrote: unreadable, malformed or of the wrong kind."""


def write_atomically(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` in one step (temporary file, fsync, ``os.replace``)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)  # noqa: PTH101 - the temporary path is a str from mkstemp
        os.replace(temporary, path)  # noqa: PTH105 - os.replace is the atomic step, named on purpose
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)  # noqa: PTH108 - as above
        raise


@contextlib.contextmanager
def new_directory(path: Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` when the block ends without error.

    Raises AlreadyExists (before the block runs, and again if another process won the race)
    when ``path`` exists. On any error the temporary directory is removed: ``path`` is either
    complete or absent.
    """
    if path.exists():
        raise AlreadyExists(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    temporary.mkdir(mode=0o700)
    try:
        yield temporary
        try:
            # rename(2) fails on an existing non-empty directory, so a complete one is never replaced.
            temporary.rename(path)
        except OSError as exc:
            raise AlreadyExists(f"{path} already exists") from exc
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``<path>.lock`` for a read-modify-write of ``path``."""
    lock_path = path.with_name(f"{path.name}.lock")
    with lock_path.open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
