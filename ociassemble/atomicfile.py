"""A small file written whole or not at all: the one way ociassemble writes a file a user reads.

A lock file, an SBOM, a ``--digest-file``, a key pair, Docker's config.json: each is
written to a temp file beside it (``.<name>.tmp-<pid>-<random>``) and renamed over it,
so a full disk, a crash or Ctrl-C leaves the old file or the new one, never half of
one. Images and layouts have their own (``transport``): they are trees and streams.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, data: bytes | str, *, mode: int | None = None, sync: bool = False) -> None:
    """``data`` (str: UTF-8) at ``path``, replacing what was there in one rename.

    ``mode``: the file's mode from its first byte (a private key is never readable by
    others, even briefly); None: a new file's usual mode (0666 less the umask).
    ``sync``: flush it to disk before the rename (a key that exists only here).
    """
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")  # (not secrets: 4 ms to import)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600 if mode is not None else 0o666)
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a full disk's ENOSPC from write() names no file: the error line should
        raise
