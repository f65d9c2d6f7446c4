"""The sandbox: a command started by bubblewrap in its own namespaces, and stopped there.

``userns_exec`` makes the run's user namespace (``idmap``: the image's root is an
unprivileged host id) and mounts the run's root; ``bwrap`` (bubblewrap, chosen over
``unshare`` + ``chroot``: one command sets up the mount, PID, network, IPC and UTS
namespaces, ``/proc``, a minimal ``/dev`` with no host devices, tmpfs ``/tmp`` and
``/run``, brings ``lo`` up, reports the namespace's PID 1 on ``--info-fd`` and kills the
sandbox if we die) then runs as root of that user namespace and starts the command:

* as root of the image, with Docker's default capabilities minus ``MKNOD`` (and no
  ``SETFCAP``/``NET_RAW``), held in the run's user namespace only, none on the host;
* with ``no_new_privs`` (bwrap), so no set-user-ID file grants anything;
* under ``seccomp.seccomp_program`` (podman's refusals: keyring, mount, namespaces,
  ptrace, kexec, bpf…);
* with ``/proc``'s kernel-wide files as runc and podman leave them: ``MASKED_PATHS``
  hidden, ``READONLY_PATHS`` read-only;
* in the image's ``WorkingDir`` as resolved inside the image (``rootpath``).

docs/run-isolation.md compares all of it with podman's defaults.

Stop: SIGTERM to every process in the sandbox's PID namespace but its PID 1 (bwrap's
reaper, which passes the command's exit status on), then the grace, then SIGKILL to
the namespace's PID 1, after which the kernel kills everything left in it. Processes
are only ever signalled after checking they are in that namespace.

Root and other users alike can run an image: see ``idmap`` for the ids each gets.
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
from typing import IO, Any

from ..errors import RunError
from .command import DEFAULT_PATH, Command
from .idmap import IdMap, check_userns
from .namespaces import PidNamespace, pid_namespace, pids_in
from .rootpath import resolve_in_root
from .seccomp import seccomp_program
from .stdio import OutputPipe
from .userns import ROOTFS_TARGET, start_in_userns

__all__ = ["Sandbox", "check_host", "MASKED_PATHS", "READONLY_PATHS"]

#: How long bwrap may take to set the sandbox up and report its PID 1.
_START_TIMEOUT = 30.0
#: How often the info pipe and a stopping namespace are polled.
_POLL = 0.05
#: How long SIGKILL of the namespace's PID 1 may take to empty it.
_KILL_GRACE = 5.0
#: Docker's default capability set without MKNOD, SETFCAP and NET_RAW: enough for
#: nginx (setuid to www-data, chown its temp dirs) and runit, nothing to make devices.
#: They are capabilities in the run's user namespace: over the image's ids only.
_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
         "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_AUDIT_WRITE")
#: What runc and podman mask in /proc (containers-common's default ``MaskedPaths``; the ``/sys``
#: ones need nothing: the sandbox has no /sys mounted). Files become an empty /dev/null,
#: folders an empty read-only tmpfs. ``/proc/asound`` and ``/proc/fs``, read-only in podman,
#: are masked here too (nothing in a serving image reads them).
MASKED_PATHS = ("/proc/acpi", "/proc/asound", "/proc/fs", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/sched_debug", "/proc/scsi", "/proc/timer_list", "/proc/timer_stats")
#: What they leave read-only (``ReadonlyPaths``): kernel-wide settings, not the image's own.
#: Bound read-only from the host's /proc: what they show depends on who opens them (a
#: network namespace's ``net.*``), not on the procfs instance.
READONLY_PATHS = ("/proc/bus", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def check_host() -> str:
    """bwrap's path, or the RunError saying what is missing."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise RunError("ociassemble run needs bubblewrap: install it (apt-get install bubblewrap)")
    check_userns()
    return bwrap


def _proc_args() -> list[str]:
    """bwrap's arguments masking ``MASKED_PATHS`` and binding ``READONLY_PATHS`` read-only (those this kernel has)."""
    args: list[str] = []
    for path in MASKED_PATHS:
        if os.path.isdir(path):
            args += ["--tmpfs", path, "--remount-ro", path]
        elif os.path.exists(path):
            args += ["--ro-bind", "/dev/null", path]
    for path in READONLY_PATHS:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    return args


def _bwrap_args(bwrap: str, command: Command, lower: Path, info_fd: int, seccomp_fd: int) -> list[str]:
    """bwrap's argv (as run inside the user namespace, where the run's root is at ``ROOTFS_TARGET``).

    ``lower`` (what the root shows before the command starts) resolves the working directory.
    """
    workdir = resolve_in_root(lower, command.workdir)
    args = [bwrap, "--bind", ROOTFS_TARGET, "/", "--proc", "/proc", *_proc_args(), "--dev", "/dev",
            "--perms", "1777", "--tmpfs", "/tmp", "--tmpfs", "/run",
            "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--hostname", command.hostname, "--new-session", "--die-with-parent",
            "--cap-drop", "ALL"]
    for cap in _CAPS:
        args += ["--cap-add", cap]
    if not os.path.lexists(lower / workdir.lstrip("/")):
        args += ["--dir", workdir]  # every existing part of it is a folder of the image: no link to follow
    args += ["--chdir", workdir, "--seccomp", str(seccomp_fd), "--info-fd", str(info_fd), "--clearenv"]
    for k, v in command.env.items():
        args += ["--setenv", k, v]
    return args + ["--", *command.argv]


class Sandbox:
    """One command in private namespaces; ``stop`` and ``close`` are safe after a failed ``start``.

    Example::

        sandbox = Sandbox()
        sandbox.start(bwrap, command, rootfs.spec, rootfs.lower, idmap)
        ...
        sandbox.stop(10.0)
        sandbox.close()
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._outputs: list[OutputPipe] = []
        self._ns: PidNamespace | None = None
        #: Host PID of the PID namespace's init (bwrap's reaper).
        self.pid: int | None = None
        #: Fds of the sandbox's network and user namespaces, held so a recycled PID cannot redirect them.
        self.netns = -1
        self.userns = -1

    @property
    def started(self) -> bool:
        return self._proc is not None

    def start(self, bwrap: str, command: Command, rootfs_spec: str, lower: Path, idmap: IdMap, *,
              stdout: IO[Any] | int | None = None, stderr: IO[Any] | int | None = None) -> None:
        """Start ``command`` with the root ``rootfs_spec`` names (see ``userns_exec``) as its ``/``; returns at once.

        Raises RunError when the sandbox does not start or the command exits at once.
        """
        owner = None
        if idmap.privileged:
            owner = (idmap.host_uid(0), idmap.host_gid(0))
        self._outputs = [OutputPipe(stdout, owner, 1), OutputPipe(stderr, owner, 2)]  # type: ignore[arg-type]
        info_r, info_w = os.pipe()
        seccomp_r, seccomp_w = os.pipe()
        try:
            os.write(seccomp_w, seccomp_program())  # a few hundred bytes: within the pipe's buffer
            os.close(seccomp_w)
            seccomp_w = -1
            cmd = _bwrap_args(bwrap, command, lower, info_w, seccomp_r)
            self._proc = start_in_userns(idmap, rootfs_spec, cmd, pass_fds=(info_w, seccomp_r),
                                         stdout=self._outputs[0].fd, stderr=self._outputs[1].fd,
                                         env={"PATH": os.environ.get("PATH", DEFAULT_PATH)}, new_session=True)
            for output in self._outputs:
                output.started()
            os.close(info_w)
            info_w = -1
            info = self._read_info(info_r)
        finally:
            for fd in (info_r, info_w, seccomp_r, seccomp_w):
                if fd >= 0:
                    os.close(fd)
        self.pid = int(info["child-pid"])
        try:
            self._ns = pid_namespace(self.pid)
            self.netns = os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            self.userns = os.open(f"/proc/{self.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
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
        for output in self._outputs:
            output.close()
        return None if proc is None else proc.returncode

    def close(self) -> None:
        """Let go of the namespaces (after whatever still enters them has stopped)."""
        for fd in (self.netns, self.userns):
            if fd >= 0:
                os.close(fd)
        self.netns = self.userns = -1
