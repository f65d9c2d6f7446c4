"""Entering a running image's namespaces and finding its processes from the host.

Network namespaces are per thread: ``setns(2)`` moves only the calling thread, so a
thread of ours can dial ``127.0.0.1`` inside the image while the rest of the process
stays on the host. A namespace is named by the fd or the ``/proc/PID/ns`` inode it was
opened from, so a recycled PID can never redirect it.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any, Callable

__all__ = ["enter_netns", "in_netns", "pid_namespace", "pids_in", "PidNamespace"]

#: ``CLONE_NEWNET`` from <sched.h>: setns only into a network namespace.
_CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)

#: A PID namespace as the kernel names it: the (device, inode) of ``/proc/PID/ns/pid``.
PidNamespace = tuple[int, int]


def enter_netns(fd: int) -> None:
    """Move the calling thread (only it) into the network namespace ``fd`` refers to."""
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def in_netns(fd: int, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on a fresh thread inside network namespace ``fd``; return or raise its result."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            enter_netns(fd)
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name="netns-call", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def pid_namespace(pid: int) -> PidNamespace:
    """The PID namespace ``pid`` lives in (raises OSError once it is gone)."""
    st = os.stat(f"/proc/{pid}/ns/pid")
    return st.st_dev, st.st_ino


def _alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (bwrap's init, orphaned when bwrap
    exits, waits as a zombie until the host's init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def pids_in(ns: PidNamespace) -> list[int]:
    """Host PIDs of every live process in PID namespace ``ns``."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if pid_namespace(int(name)) == ns and _alive(int(name)):
                    out.append(int(name))
            except OSError:
                continue
    return sorted(out)
