"""Paths from an image's config resolved inside the image's root, never on the host.

A ``WorkingDir`` of ``/../oldroot/etc`` or one that crosses a symlink pointing at
``/oldroot/...`` must not name a host path when bwrap creates or enters it (bwrap sets the
sandbox up with the host's root at ``/oldroot``). ``resolve_in_root`` does what Go's
``securejoin.SecureJoin`` does, the function runc and podman use for the same job: each
component is looked up under ``root``; a symlink is followed with its target read as if
``root`` were ``/`` (an absolute target restarts at ``root``); ``..`` never climbs above
``root``. The answer is a clean absolute path *inside* the image, whose existing part has
no symlink left in it.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from pathlib import Path

from ..errors import RunError

__all__ = ["resolve_in_root"]

#: Symlinks followed in one resolution before giving up (Linux's own limit is 40).
_MAX_LINKS = 255


def resolve_in_root(root: Path, path: str) -> str:
    """``path`` (from the image config) as an absolute path inside ``root``, symlinks followed within it.

    Example::

        resolve_in_root(Path("rootfs"), "/../oldroot/etc")  # '/oldroot/etc' (inside the image)

    Raises RunError for a symlink loop.
    """
    pending = [p for p in path.split("/") if p not in ("", ".")]
    pending.reverse()
    done: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if done:
                done.pop()
            continue
        here = os.path.join(root, *done, part)
        try:
            st = os.lstat(here)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise RunError(f"cannot resolve {path!r} in the image: {exc.strerror}") from None
            done.append(part)  # the rest does not exist (yet): taken literally, .. still clamped
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_LINKS:
                raise RunError(f"the image's path {path!r} has a symlink loop")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            pending.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
            continue
        done.append(part)
    return posixpath.join("/", *done)
