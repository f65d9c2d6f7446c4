"""Temp files written under an exclusive flock: a free lock is how a cleaner knows the writer is gone.

A writer makes its temp file with ``locked_temp`` and holds the lock until the file is
renamed into place or removed; the process dying drops it. A cleaner (``cache verify``)
asks ``tmp_state``, so a file left by a killed build is told from one being written
without guessing from its age, and is removed only under its lock.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

__all__ = ["LOCKED_PREFIXES", "locked_temp", "tmp_state"]

#: Temp files written under an exclusive flock (see ``locked_temp``): free lock = dead writer.
LOCKED_PREFIXES = ("blob-", "layer-", "ref-")


def locked_temp(directory: Path, prefix: str) -> tuple[int, Path]:
    """A new temp file in ``directory`` with an exclusive flock held on its descriptor.

    The lock lives as long as the descriptor (a killed process drops it). ``verify``
    removes a temp file only while holding its lock, so a file it removed between our
    ``mkstemp`` and ``flock`` is seen here (no links left) and another one is made.
    """
    while True:
        fd, name = tempfile.mkstemp(dir=directory, prefix=prefix)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:
            return fd, Path(name)
        os.close(fd)


def tmp_state(entry: Path, now: float, max_age: float, *, remove: bool) -> str:
    """``busy`` (being written, or recent), ``stale`` (abandoned), or ``removed`` (abandoned
    and, with ``remove``, already unlinked while its lock was held: see ``locked_temp``)."""
    try:
        st = entry.lstat()
    except FileNotFoundError:
        return "busy"  # gone already: its writer committed or cleaned up
    if entry.name.startswith(LOCKED_PREFIXES) and entry.is_file() and not entry.is_symlink():
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return "busy"
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return "busy"
            try:
                same = os.stat(entry, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                return "busy"  # renamed into place (committed) or removed meanwhile
            if remove:
                entry.unlink(missing_ok=True)  # under the lock: a writer racing us sees no link and retries
                return "removed"
            return "stale"
        finally:
            os.close(fd)
    return "stale" if now - st.st_mtime > max_age else "busy"
