"""Starting a command as root of a new user namespace with the run's id map (the parent's half).

The child is ``userns_exec.py`` (see it for the steps and why a separate process): it
makes the namespace and waits; ``start_in_userns`` writes the map (``IdMap.write``) and
lets it go on. What the command then can do is bounded by the map: it is root over the
image's ids only, and holds no capability on the host.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO, Any, Sequence

from ..errors import RunError
from .idmap import IdMap

__all__ = ["start_in_userns", "remove_tree", "ROOTFS_TARGET", "NO_ROOTFS"]

_HELPER = Path(__file__).with_name("userns_exec.py")
#: Where userns_exec mounts the run's root in its private mount namespace (its ``TARGET``).
ROOTFS_TARGET = "/tmp/ociassemble-rootfs"
#: The rootfs spec for a command that needs no mount (the unpacker).
NO_ROOTFS = "-"
#: How long the helper may take to make the namespace (a Python start, a few ms).
_TIMEOUT = 30.0


def start_in_userns(idmap: IdMap, rootfs_spec: str, command: Sequence[str], *, pass_fds: Sequence[int] = (),
                    stdin: IO[Any] | int | None = subprocess.DEVNULL, stdout: IO[Any] | int | None = None,
                    stderr: IO[Any] | int | None = None, env: dict[str, str] | None = None,
                    new_session: bool = False) -> "subprocess.Popen[bytes]":
    """``command`` started as root of a new user namespace mapped by ``idmap``; returns once it runs.

    ``rootfs_spec`` (``overlay:LOWER:UPPER:WORK``, ``bind:DIR`` or ``NO_ROOTFS``) is mounted at
    ``ROOTFS_TARGET`` in a private mount namespace first.

    Example::

        proc = start_in_userns(host_idmap(), NO_ROOTFS, ["id"])

    Raises RunError when the namespace cannot be made or mapped (the helper's own line is on
    ``stderr``).
    """
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", str(_HELPER), str(to_child_r), str(from_child_w),
                                 rootfs_spec, "--", *command],
                                pass_fds=(to_child_r, from_child_w, *pass_fds), stdin=stdin, stdout=stdout,
                                stderr=stderr, env=env, start_new_session=new_session)
    except BaseException:
        for fd in (to_child_r, to_child_w, from_child_r, from_child_w):
            os.close(fd)
        raise
    os.close(to_child_r)
    os.close(from_child_w)
    try:
        ready, _, _ = select.select([from_child_r], [], [], _TIMEOUT)
        if not ready or os.read(from_child_r, 1) != b"u":
            if proc.poll() is None:
                proc.kill()
            status = proc.wait()
            raise RunError(f"could not make the run's user namespace (status {status}); see the message above")
        try:
            idmap.write(proc.pid)
        except RunError:
            os.close(to_child_w)  # the helper reads end of file and exits 1
            to_child_w = -1
            proc.wait()
            raise
        os.write(to_child_w, b"g")
    finally:
        os.close(from_child_r)
        if to_child_w >= 0:
            os.close(to_child_w)
    return proc


def remove_tree(path: Path, idmap: IdMap | None) -> None:
    """Remove ``path`` and all under it, including files of the image's other ids; never raises.

    A user other than root cannot remove what belongs to its subordinate ids (nginx's
    0700 ``www-data`` folders): it removes them as root of a user namespace with the map.
    """
    if not os.path.lexists(path):
        return
    if idmap is not None and not idmap.privileged and os.geteuid() != 0:
        try:
            start_in_userns(idmap, NO_ROOTFS, ["rm", "-rf", "--", str(path)], stderr=subprocess.DEVNULL).wait()
        except (RunError, OSError):
            pass
    shutil.rmtree(path, ignore_errors=True)
