"""The sandbox: a command started by bubblewrap in its own namespaces, and stopped there.

``bwrap`` (bubblewrap, chosen over ``unshare`` + ``chroot``: one command sets up the
mount, PID, network, IPC and UTS namespaces, ``/proc``, a minimal ``/dev`` with no host
devices, tmpfs ``/tmp`` and ``/run``, brings ``lo`` up, reports the namespace's PID 1 on
``--info-fd`` and kills the sandbox if we die). The command runs as root inside with
Docker's default capabilities minus ``MKNOD`` (and no ``SETFCAP``/``NET_RAW``), with
``no_new_privs`` set by bwrap, so no device node can be made and no set-user-ID file
grants anything.

Stop: SIGTERM to every process in the sandbox's PID namespace but its PID 1 (bwrap's
reaper, which passes the command's exit status on), then the grace, then SIGKILL to
the namespace's PID 1, after which the kernel kills everything left in it. Processes
are only ever signalled after checking they are in that namespace.

Only root is supported: a rootless run would need the port forwarder inside the
image's user namespace, which a threaded process cannot enter.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any, Callable

from ..errors import RunError
from .command import DEFAULT_PATH, Command
from .namespaces import PidNamespace, pid_namespace, pids_in

__all__ = ["Sandbox", "check_host"]

#: How long bwrap may take to set the sandbox up and report its PID 1.
_START_TIMEOUT = 30.0
#: Docker's default capability set without MKNOD, SETFCAP and NET_RAW: enough for
#: nginx (setuid to www-data, chown its temp dirs) and runit, nothing to make devices.
_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
         "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_AUDIT_WRITE")
#: How often the info pipe and a stopping namespace are polled.
_POLL = 0.05
#: How long SIGKILL of the namespace's PID 1 may take to empty it.
_KILL_GRACE = 5.0


def check_host() -> tuple[str, str | None]:
    """bwrap's and unshare's paths, or the RunError saying what is missing."""
    if os.geteuid() != 0:
        try:
            userns = int(Path("/proc/sys/user/max_user_namespaces").read_text()) > 0
        except (OSError, ValueError):
            userns = False
        why = ("this machine also has user namespaces disabled" if not userns
               else "a rootless run (user namespaces) is not supported yet")
        raise RunError(f"ociassemble run needs root ({why}); run it with sudo")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise RunError("ociassemble run needs bubblewrap: install it (apt-get install bubblewrap)")
    return bwrap, shutil.which("unshare")


def _bwrap_args(bwrap: str, command: Command, root: Path, lower: Path, info_fd: int) -> list[str]:
    """bwrap's argv: ``root`` as ``/``; ``lower`` (what ``root`` shows) tells whether the workdir exists."""
    workdir = command.workdir
    args = [bwrap, "--bind", str(root), "/", "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--tmpfs", "/tmp", "--tmpfs", "/run",
            "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--hostname", command.hostname, "--new-session", "--die-with-parent",
            "--cap-drop", "ALL"]
    for cap in _CAPS:
        args += ["--cap-add", cap]
    if workdir != "/" and not os.path.lexists(lower / workdir.lstrip("/")):
        args += ["--dir", workdir]
    args += ["--chdir", workdir, "--info-fd", str(info_fd), "--clearenv"]
    for k, v in command.env.items():
        args += ["--setenv", k, v]
    return args + ["--", *command.argv]


class Sandbox:
    """One command in private namespaces; ``stop`` and ``close`` are safe after a failed ``start``.

    Example::

        sandbox = Sandbox()
        sandbox.start(bwrap, command, root, lower)
        ...
        sandbox.stop(10.0)
        sandbox.close()
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._ns: PidNamespace | None = None
        #: Host PID of the PID namespace's init (bwrap's reaper).
        self.pid: int | None = None
        #: An fd of the sandbox's network namespace, held so a recycled PID cannot redirect it.
        self.netns = -1

    @property
    def started(self) -> bool:
        return self._proc is not None

    def start(self, bwrap: str, command: Command, root: Path, lower: Path, *,
              wrap: Callable[[list[str]], list[str]] = lambda cmd: cmd,
              stdout: IO[Any] | int | None = None, stderr: IO[Any] | int | None = None) -> None:
        """Start ``command`` with ``root`` as its ``/`` (``wrap`` prefixes bwrap's argv); returns at once.

        Raises RunError when the sandbox does not start or the command exits at once.
        """
        info_r, info_w = os.pipe()
        try:
            cmd = wrap(_bwrap_args(bwrap, command, root, lower, info_w))
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                          pass_fds=(info_w,), start_new_session=True,
                                          env={"PATH": os.environ.get("PATH", DEFAULT_PATH)})
            os.close(info_w)
            info_w = -1
            info = self._read_info(info_r)
        finally:
            os.close(info_r)
            if info_w >= 0:
                os.close(info_w)
        self.pid = int(info["child-pid"])
        try:
            self._ns = pid_namespace(self.pid)
            self.netns = os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise RunError(f"the image's command {command.argv[0]!r} exited at once (status {self._proc.wait()})") from None

    def _read_info(self, fd: int) -> dict[str, Any]:
        assert self._proc is not None
        data = b""
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], _POLL)
            if ready:
                chunk = os.read(fd, 4096)
                data += chunk
                try:
                    info = json.loads(data)
                    if isinstance(info, dict) and "child-pid" in info:
                        return info
                except ValueError:
                    pass
                if not chunk:
                    break
        status = self._proc.poll()
        raise RunError("the sandbox (bwrap) did not start" + (f" (exit status {status}); see its message above"
                                                            if status is not None else " in time"))

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def pids(self) -> list[int]:
        """Host PIDs of every process in the sandbox's PID namespace (empty once stopped)."""
        return pids_in(self._ns) if self._ns is not None else []

    def wait(self, timeout: float | None = None) -> int:
        """The command's exit status once it ends (raises TimeoutExpired)."""
        assert self._proc is not None
        return self._proc.wait(timeout)

    def _signal_all(self, sig: int, include_init: bool) -> None:
        if self._ns is None:
            return
        for pid in pids_in(self._ns):
            if pid == self.pid and not include_init:
                continue
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float) -> int | None:
        """End every process in the sandbox (SIGTERM, ``grace`` seconds, SIGKILL); idempotent.

        Returns the command's exit status (None if it never started).
        """
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._signal_all(signal.SIGTERM, include_init=False)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                if self.pid is not None and self._ns is not None and self.pid in pids_in(self._ns):
                    os.kill(self.pid, signal.SIGKILL)  # the kernel then kills the whole namespace
                try:
                    proc.wait(_KILL_GRACE)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        deadline = time.monotonic() + _KILL_GRACE
        while self.pids() and time.monotonic() < deadline:
            self._signal_all(signal.SIGKILL, include_init=True)
            time.sleep(_POLL)
        return None if proc is None else proc.returncode

    def close(self) -> None:
        """Let go of the network namespace (after whatever still enters it has stopped)."""
        if self.netns >= 0:
            os.close(self.netns)
            self.netns = -1
