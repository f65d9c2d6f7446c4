"""The image's stdout and stderr: pipes its root owns, copied to ours by a thread each.

A program in the image may reopen its output by name (nginx's ``error.log`` is a link
to ``/dev/stderr``, that is ``/proc/self/fd/2``), and reopening a pipe checks the pipe's
owner. The caller's terminal or pipe belongs to the caller (root, or the user who
started an outer ``runuser``), an id the image's root is not: so, as runc does with a
user namespace, the image writes to pipes of its own, chowned to its root when we are
root, and a thread copies each to where the caller asked.
"""

from __future__ import annotations

import os
import subprocess
import threading
from typing import IO, Any

__all__ = ["OutputPipe"]

_CHUNK = 1 << 16


class OutputPipe:
    """One of the image's output streams; ``fd`` (the write end) goes to the sandbox, ``close`` waits for the copy."""

    def __init__(self, target: IO[Any] | int | None, owner: tuple[int, int] | None, default_fd: int) -> None:
        #: What to hand the sandbox: the write end, or ``target`` itself for DEVNULL.
        self.fd: IO[Any] | int | None = target
        self._thread: threading.Thread | None = None
        if target == subprocess.DEVNULL:
            return
        if target is None:
            out_fd = default_fd  # our own stdout or stderr, as Popen's None means
        elif isinstance(target, int):
            out_fd = target
        else:
            out_fd = target.fileno()
        r, w = os.pipe()
        if owner is not None:
            os.fchown(w, *owner)
        self.fd = w
        self._thread = threading.Thread(target=self._copy, args=(r, out_fd), name="image-output", daemon=True)
        self._thread.start()

    @staticmethod
    def _copy(r: int, out_fd: int) -> None:
        try:
            while data := os.read(r, _CHUNK):
                view = memoryview(data)
                while view:
                    try:
                        view = view[os.write(out_fd, view):]
                    except OSError:
                        view = view[len(view):]  # the caller's end is gone: drain, do not block the image
        finally:
            os.close(r)

    def started(self) -> None:
        """The sandbox has its copy of the write end: let go of ours."""
        if self._thread is not None and isinstance(self.fd, int) and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def close(self, timeout: float = 5.0) -> None:
        """Wait for the image's last output to be copied (every writer has exited)."""
        self.started()
        if self._thread is not None:
            self._thread.join(timeout)
