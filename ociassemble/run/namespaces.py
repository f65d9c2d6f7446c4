"""Finding a running image's processes from the host, by the PID namespace they are in.

A namespace is named by the ``/proc/PID/ns`` inode it was read from, so a recycled PID
can never redirect it.
"""

from __future__ import annotations

import os

__all__ = ["pid_namespace", "pids_in", "PidNamespace"]

#: A PID namespace as the kernel names it: the (device, inode) of ``/proc/PID/ns/pid``.
PidNamespace = tuple[int, int]


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
