"""Running an image without a daemon: its command in private namespaces over its unpacked rootfs.

How a run is put together (root on the host; see the design's "Running an image"):

* **Root filesystem.** ``unpack.unpack_image`` unpacks the image once into the cache
  (read-only from then on). Each run gets ``<cache>/run/<pid>-<random>/`` holding an
  overlayfs upper and work dir, mounted over the cached rootfs inside a private mount
  namespace (``unshare --mount``), so the mount vanishes with the run and nothing a
  run writes (nginx's ``/var/lib/nginx``, logs, ``__pycache__``) reaches the cache or
  the next run. Where overlayfs is missing, the rootfs is copied instead
  (``cp -a --reflink=auto``). The run directory is removed when the run stops.
* **Namespaces.** ``bwrap`` (bubblewrap, chosen over ``unshare`` + ``chroot``: one
  command sets up the mount, PID, network, IPC and UTS namespaces, ``/proc``, a
  minimal ``/dev`` with no host devices, tmpfs ``/tmp`` and ``/run``, brings ``lo`` up,
  reports the namespace's PID 1 on ``--info-fd`` and kills the sandbox if we die).
  The command runs as root inside with Docker's default capabilities minus
  ``MKNOD`` (and no ``SETFCAP``/``NET_RAW``), with ``no_new_privs`` set by bwrap, so
  no device node can be made and no set-user-ID file grants anything.
* **Ports.** The image's network namespace is private. Each published port is a
  listening socket on the host's ``127.0.0.1:HOST_PORT``; each accepted connection
  is served by a thread that enters the image's network namespace with
  ``setns(2)`` (network namespaces are per thread) and connects to
  ``127.0.0.1:CONTAINER_PORT`` there, then copies bytes both ways. The namespace is
  held by an fd opened at start, so a recycled PID can never redirect it.
* **Stop.** SIGTERM to every process in the image's PID namespace but its PID 1
  (bwrap's reaper, which passes the command's exit status on), then up to
  ``stop_timeout`` seconds' grace, then SIGKILL to the namespace's PID 1, after which
  the kernel kills everything left in it. Processes are only ever signalled after
  checking they are in that namespace.

Logs: the command's stdout and stderr are ours (the terminal), stdin is /dev/null.
Only root is supported: a rootless run would need the port forwarder inside the
image's user namespace, which a threaded process cannot enter.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO, Any, Callable, Mapping

from ..errors import RunError
from ..image.assemble import Image
from ..image.cache import BlobCache
from ..image.digest import Digest
from .unpack import DEFAULT_LIMITS, UnpackLimits, unpack_image

__all__ = ["RunningImage", "run_image", "DEFAULT_STOP_TIMEOUT", "DEFAULT_READY_TIMEOUT"]

#: Grace between SIGTERM and SIGKILL: Docker's ``stop`` default.
DEFAULT_STOP_TIMEOUT = 10.0
#: How long ``wait_until_ready`` waits for every published port to answer: gunicorn
#: importing a big model can take this long on a cold disk.
DEFAULT_READY_TIMEOUT = 120.0
#: How long bwrap may take to set the sandbox up and report its PID 1.
_START_TIMEOUT = 30.0
#: PATH when the image's Env has none (Docker's default).
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Docker's default capability set without MKNOD, SETFCAP and NET_RAW: enough for
#: nginx (setuid to www-data, chown its temp dirs) and runit, nothing to make devices.
_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
         "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_AUDIT_WRITE")
_CLONE_NEWNET = 0x40000000
_BUF = 1 << 16
_POLL = 0.05

_libc = ctypes.CDLL(None, use_errno=True)
_overlay_ok: bool | None = None


def _setns_net(fd: int) -> None:
    """Move the calling thread (only it) into the network namespace ``fd`` refers to."""
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _in_netns(fd: int, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on a fresh thread inside network namespace ``fd``; return or raise its result."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            _setns_net(fd)
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name="netns-call", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(_BUF)
            if not data:
                break
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _PortForwarder:
    """``127.0.0.1:host_port`` on the host ⇄ ``127.0.0.1:container_port`` in the image's netns."""

    def __init__(self, host_port: int, container_port: int) -> None:
        self.host_port = host_port
        self.container_port = container_port
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind(("127.0.0.1", host_port))
            self._sock.listen(128)
        except OSError as exc:
            self._sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise RunError(f"127.0.0.1:{host_port} is already in use: stop what listens there or publish another host port") from None
            raise RunError(f"cannot listen on 127.0.0.1:{host_port}: {exc.strerror}") from None
        self._wake_r, self._wake_w = os.pipe()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._active: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        self._netns = -1

    def start(self, netns_fd: int) -> None:
        self._netns = netns_fd
        self._thread = threading.Thread(target=self._accept_loop, name=f"publish-{self.host_port}", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            ready, _, _ = select.select([self._sock, self._wake_r], [], [])
            if self._stopped.is_set():
                return
            if self._sock in ready:
                try:
                    conn, _ = self._sock.accept()
                except OSError:
                    continue
                threading.Thread(target=self._serve, args=(conn,), name=f"publish-{self.host_port}-conn",
                                 daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            _setns_net(self._netns)  # this thread only; sockets it creates live in the image's netns
            up = socket.create_connection(("127.0.0.1", self.container_port), timeout=5)
            up.settimeout(None)
        except OSError:
            conn.close()
            return
        # Both legs carry small request/response writes: without TCP_NODELAY, Nagle's
        # algorithm meets the peer's delayed ACK and stalls replies by tens of ms.
        for s in (conn, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if self._stopped.is_set():
                conn.close()
                up.close()
                return
            self._active.update((conn, up))
        back = threading.Thread(target=_pump, args=(up, conn), daemon=True)
        back.start()
        _pump(conn, up)
        back.join()
        with self._lock:
            self._active.difference_update((conn, up))
        conn.close()
        up.close()

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sock.close()
        with self._lock:
            for s in self._active:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        os.close(self._wake_r)
        os.close(self._wake_w)


def _ns_id(pid: int) -> tuple[int, int]:
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


def _pids_in(ns: tuple[int, int]) -> list[int]:
    """Host PIDs of every live process in PID namespace ``ns``."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if _ns_id(int(name)) == ns and _alive(int(name)):
                    out.append(int(name))
            except OSError:
                continue
    return sorted(out)


def _overlay_supported(run_root: Path, unshare: str) -> bool:
    """Whether overlayfs can be mounted here (probed once per process on a scratch dir)."""
    global _overlay_ok
    if _overlay_ok is None:
        probe = run_root / f".probe-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            for d in ("lower", "upper", "work", "merged"):
                (probe / d).mkdir(parents=True)
            opts = f"lowerdir={probe}/lower,upperdir={probe}/upper,workdir={probe}/work"
            r = subprocess.run([unshare, "--mount", "--propagation", "private", "mount", "-t", "overlay", "overlay",
                                "-o", opts, str(probe / "merged")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               check=False)
            _overlay_ok = r.returncode == 0
        finally:
            shutil.rmtree(probe, ignore_errors=True)
    return _overlay_ok


def _check_host() -> tuple[str, str | None]:
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


class RunningImage:
    """An image's command running in its own namespaces; a context manager for tests.

    Example::

        with RunningImage(image, cache, publish={18080: 5001}) as running:
            running.wait_until_ready()
            urllib.request.urlopen("http://127.0.0.1:18080/")
        # stopped: every process of the image is gone, its run directory removed

    ``publish`` maps host ports (on 127.0.0.1) to ports inside the image; ``env``
    overrides or adds to the image's Env.
    """

    def __init__(self, image: Image, cache: BlobCache, *, publish: Mapping[int, int] | None = None,
                 env: Mapping[str, str] | None = None, stop_timeout: float = DEFAULT_STOP_TIMEOUT,
                 stdout: IO[Any] | int | None = None, stderr: IO[Any] | int | None = None,
                 limits: UnpackLimits = DEFAULT_LIMITS) -> None:
        self.image = image
        self.cache = cache
        self.publish = dict(publish or {})
        for host_port, container_port in self.publish.items():
            if not (0 < host_port < 65536 and 0 < container_port < 65536):
                raise RunError(f"cannot publish {host_port} -> {container_port}: ports are 1 to 65535")
        self.env = dict(env or {})
        self.stop_timeout = stop_timeout
        self._stdout = stdout
        self._stderr = stderr
        self._limits = limits
        self._proc: subprocess.Popen[bytes] | None = None
        self._forwarders: list[_PortForwarder] = []
        self._netns = -1
        self._ns: tuple[int, int] | None = None
        self._run_dir: Path | None = None
        #: Host PID of the image's PID-namespace init (bwrap's reaper).
        self.pid: int | None = None

    # -- start ---------------------------------------------------------------
    def _argv(self) -> list[str]:
        cfg = self.image.config
        argv = list(cfg.entrypoint or ()) + list(cfg.cmd or ())
        if not argv:
            raise RunError(f"image {self.image.digest} has no Entrypoint or Cmd: build it with a command to run")
        if cfg.user not in (None, "", "0", "root", "0:0", "root:root"):
            raise RunError(f"image {self.image.digest} asks for User {cfg.user!r}; ociassemble run only runs as root yet")
        return argv

    def _environment(self) -> dict[str, str]:
        env = self.image.config.env_dict()
        env.update(self.env)
        env.setdefault("PATH", _DEFAULT_PATH)
        env.setdefault("HOME", "/root")
        env.setdefault("HOSTNAME", self._hostname())
        return env

    def _hostname(self) -> str:
        return Digest(self.image.digest).hex[:12]

    def _bwrap_args(self, bwrap: str, root: str, info_fd: int, rootfs: Path) -> list[str]:
        workdir = self.image.config.working_dir or "/"
        args = [bwrap, "--bind", root, "/", "--proc", "/proc", "--dev", "/dev",
                "--perms", "1777", "--tmpfs", "/tmp", "--tmpfs", "/run",
                "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--hostname", self._hostname(), "--new-session", "--die-with-parent",
                "--cap-drop", "ALL"]
        for cap in _CAPS:
            args += ["--cap-add", cap]
        if workdir != "/" and not os.path.lexists(rootfs / workdir.lstrip("/")):
            args += ["--dir", workdir]
        args += ["--chdir", workdir, "--info-fd", str(info_fd), "--clearenv"]
        for k, v in self._environment().items():
            args += ["--setenv", k, v]
        return args + ["--", *self._argv()]

    def start(self) -> "RunningImage":
        """Unpack (once), set up the run directory and start the command; returns at once.

        Raises RunError (not root, bwrap missing, a port taken, no command, the sandbox
        failed to start), ArchiveError from unpacking.
        """
        if self._proc is not None:
            raise RunError("this RunningImage was already started; make a new one")
        bwrap, unshare = _check_host()
        argv = self._argv()
        try:
            for host_port, container_port in sorted(self.publish.items()):
                self._forwarders.append(_PortForwarder(host_port, container_port))
            rootfs = unpack_image(self.image, self.cache, limits=self._limits)
            self._launch(bwrap, unshare, rootfs, argv)
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, bwrap: str, unshare: str | None, rootfs: Path, argv: list[str]) -> None:
        runs = self.cache.root / "run"
        runs.mkdir(mode=0o700, exist_ok=True)
        for stale in runs.glob("[0-9]*-*"):
            if not Path(f"/proc/{stale.name.split('-')[0]}").exists():
                shutil.rmtree(stale, ignore_errors=True)
        self._run_dir = run_dir = runs / f"{os.getpid()}-{os.urandom(4).hex()}"
        run_dir.mkdir(mode=0o700)
        merged = run_dir / "rootfs"
        merged.mkdir()
        overlay = (unshare is not None and not any(c in str(p) for p in (rootfs, run_dir) for c in ",:\\")
                   and _overlay_supported(runs, unshare))
        info_r, info_w = os.pipe()
        try:
            cmd = self._bwrap_args(bwrap, str(merged), info_w, rootfs)
            if overlay:
                assert unshare is not None
                (run_dir / "upper").mkdir()
                (run_dir / "work").mkdir()
                opts = f"lowerdir={rootfs},upperdir={run_dir / 'upper'},workdir={run_dir / 'work'}"
                cmd = [unshare, "--mount", "--propagation", "private", "--", "/bin/sh", "-ec",
                       'mount -t overlay overlay -o "$1" "$2"; shift 2; exec "$@"', "sh", opts, str(merged), *cmd]
            else:
                r = subprocess.run(["cp", "-a", "--reflink=auto", f"{rootfs}/.", f"{merged}/"],
                                   stderr=subprocess.PIPE, text=True, check=False)
                if r.returncode != 0:
                    raise RunError(f"cannot copy the rootfs into {run_dir}: {r.stderr.strip()}")
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=self._stderr,
                                          pass_fds=(info_w,), start_new_session=True,
                                          env={"PATH": os.environ.get("PATH", _DEFAULT_PATH)})
            os.close(info_w)
            info_w = -1
            info = self._read_info(info_r)
        finally:
            os.close(info_r)
            if info_w >= 0:
                os.close(info_w)
        self.pid = int(info["child-pid"])
        try:
            self._ns = _ns_id(self.pid)
            self._netns = os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise RunError(f"the image's command {argv[0]!r} exited at once (status {self._proc.wait()})") from None
        for f in self._forwarders:
            f.start(self._netns)

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

    # -- while running -------------------------------------------------------
    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def pids(self) -> list[int]:
        """Host PIDs of every process in the image's PID namespace (empty once stopped)."""
        return _pids_in(self._ns) if self._ns is not None else []

    def _answers(self, port: int) -> bool:
        def dial() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        return bool(_in_netns(self._netns, dial))

    def wait_until_ready(self, timeout: float = DEFAULT_READY_TIMEOUT) -> None:
        """Return once every published container port accepts connections.

        Raises RunError if the command exits first or ``timeout`` seconds pass.
        """
        if self._proc is None:
            raise RunError("the image is not running: call start() first")
        pending = sorted(set(self.publish.values()))
        deadline = time.monotonic() + timeout
        while pending:
            status = self._proc.poll()
            if status is not None:
                raise RunError(f"the image's command exited with status {status} before port {pending[0]} answered; see its log above")
            pending = [p for p in pending if not self._answers(p)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RunError(f"port {pending[0]} in the image did not answer within {timeout:g} s; see its log above")
            time.sleep(0.1)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the command to end on its own; its exit status (raises TimeoutExpired)."""
        if self._proc is None:
            raise RunError("the image is not running: call start() first")
        return self._proc.wait(timeout)

    # -- stop ----------------------------------------------------------------
    def _signal_all(self, sig: int, include_init: bool) -> None:
        if self._ns is None:
            return
        for pid in _pids_in(self._ns):
            if pid == self.pid and not include_init:
                continue
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def stop(self) -> int | None:
        """Stop the image (SIGTERM, grace, SIGKILL) and clean up; idempotent.

        Returns the command's exit status (None if it never started).
        """
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._signal_all(signal.SIGTERM, include_init=False)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                if self.pid is not None and self._ns is not None and self.pid in _pids_in(self._ns):
                    os.kill(self.pid, signal.SIGKILL)  # the kernel then kills the whole namespace
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        deadline = time.monotonic() + 5
        while self.pids() and time.monotonic() < deadline:
            self._signal_all(signal.SIGKILL, include_init=True)
            time.sleep(_POLL)
        for f in self._forwarders:
            f.stop()
        self._forwarders = []
        if self._netns >= 0:
            os.close(self._netns)
            self._netns = -1
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None
        return None if proc is None else proc.returncode

    def __enter__(self) -> "RunningImage":
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()


class _Terminated(BaseException):
    """SIGTERM arrived: stop the image and return."""


def run_image(image: Image, cache: BlobCache, *, publish: Mapping[int, int] | None = None,
              env: Mapping[str, str] | None = None, on_ready: Callable[[RunningImage], None] | None = None,
              stop_timeout: float = DEFAULT_STOP_TIMEOUT, ready_timeout: float = DEFAULT_READY_TIMEOUT) -> int:
    """Run ``image`` in the foreground until its command ends, Ctrl-C or SIGTERM.

    Example::

        status = run_image(image, cache, publish={18080: 5001},
                           on_ready=lambda r: print("serving on http://127.0.0.1:18080"))

    ``on_ready`` is called once every published port answers (at once without ports).
    Returns the command's exit status, or 143 after SIGTERM; after Ctrl-C the image is
    stopped and KeyboardInterrupt re-raised (the CLI exits 130).

    Raises RunError (see ``RunningImage.start`` and ``wait_until_ready``), ArchiveError.
    """
    running = RunningImage(image, cache, publish=publish, env=env, stop_timeout=stop_timeout)
    previous: Any = None
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        def on_term(signum: int, frame: FrameType | None) -> None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the stop short
            raise _Terminated()

        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        running.start()
        if on_ready is not None:
            running.wait_until_ready(ready_timeout)
            on_ready(running)
        return running.wait()
    except _Terminated:
        running.stop()
        return 128 + signal.SIGTERM
    finally:
        running.stop()
        if in_main:
            signal.signal(signal.SIGTERM, previous)
