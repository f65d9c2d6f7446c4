"""A running image: its command in a sandbox over its own rootfs, with its ports published.

How a run is put together (by root or any other user; see the design's "Running an
image" and docs/run-isolation.md), each part in its own module:

* ``idmap``: which host ids the image's users are in the run's user namespace.
* ``command``: what the image's config asks to run (argv, Env, working directory).
* ``rootfs``: the run's writable root, an overlay (or a copy) over the image's
  rootfs, unpacked once into the cache by ``unpack``.
* ``sandbox``: the user namespace (``userns``) and bubblewrap's namespaces around the
  command, its seccomp filter and masked /proc, and stopping it (SIGTERM,
  ``stop_timeout`` seconds' grace, SIGKILL).
* ``ports``: each published host port forwarded into the image's private network,
  through a relay in the image's namespaces.

An image for another CPU architecture (``linux/arm64`` on an x86-64 machine) runs
through qemu user emulation: nothing in the sandbox changes, because the kernel's
binfmt_misc hands each foreign ELF binary to qemu's handler, registered with the ``F``
flag so it works inside the image's root (``emulation``). ``start`` sets that up, or
fails with the one line saying what to install, before anything is unpacked; the
readiness wait allows ``emulation.SLOWDOWN`` times longer.

Ready means every published port accepts connections and, for a scoring image
(``health``), its health probe ``GET /`` answers ``Healthy``: nginx accepts
connections long before gunicorn has run init().

Logs: the command's stdout and stderr are ours (the terminal), stdin is /dev/null.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO, Any, Callable, Mapping

from ..emulation import BINFMT, SLOWDOWN, ensure_emulation, needs_emulation
from ..errors import BuildError, RunError, StillStarting
from ..image.assemble import Image
from ..image.cache import BlobCache
from ..image.oci import Platform
from ..image.platform import normalize
from . import health
from .command import image_command
from .idmap import host_idmap
from .ports import PublishedPorts
from .rootfs import RunRootfs
from .sandbox import Sandbox, check_host
from .unpack import DEFAULT_LIMITS, UnpackLimits

__all__ = ["RunningImage", "run_image", "DEFAULT_STOP_TIMEOUT", "DEFAULT_READY_TIMEOUT"]

#: Grace between SIGTERM and SIGKILL: Docker's ``stop`` default.
DEFAULT_STOP_TIMEOUT = 10.0
#: How long ``wait_until_ready`` waits for every published port to answer: gunicorn
#: importing a big model can take this long on a cold disk (times ``emulation.SLOWDOWN``
#: for an image of another architecture).
DEFAULT_READY_TIMEOUT = 120.0
#: How often ``wait_until_ready`` dials the ports, and asks a scoring image's health probe.
_READY_POLL = 0.1
_HEALTH_POLL = 0.5
#: Seconds between two progress lines while a scoring image is not Healthy yet.
PROGRESS_EVERY = 15.0


class RunningImage:
    """An image's command running in its own namespaces; a context manager for tests.

    Example::

        with RunningImage(image, cache, publish={18080: 5001}) as running:
            running.wait_until_ready()
            urllib.request.urlopen("http://127.0.0.1:18080/")
        # stopped: every process of the image is gone, its run directory removed

    ``publish`` maps host ports (on 127.0.0.1) to ports inside the image; ``env``
    overrides or adds to the image's Env. ``log`` hears what ``start`` sets up on the host
    (mounting binfmt_misc for an image of another architecture; ``binfmt``: where it is
    mounted, another folder in tests).
    """

    def __init__(self, image: Image, cache: BlobCache, *, publish: Mapping[int, int] | None = None,
                 env: Mapping[str, str] | None = None, stop_timeout: float = DEFAULT_STOP_TIMEOUT,
                 stdout: IO[Any] | int | None = None, stderr: IO[Any] | int | None = None,
                 limits: UnpackLimits = DEFAULT_LIMITS, log: Callable[[str], None] = lambda _: None,
                 binfmt: Path = BINFMT) -> None:
        self.image = image
        self.cache = cache
        #: The image's platform, and whether this machine runs it through qemu.
        self.platform: Platform = normalize(image.platform)
        self.emulated = needs_emulation(self.platform.architecture)
        self._log = log
        self._binfmt = binfmt
        self._ports = PublishedPorts(publish)
        self.publish = self._ports.mapping
        self.env = dict(env or {})
        self.stop_timeout = stop_timeout
        self._stdout = stdout
        self._stderr = stderr
        self._limits = limits
        self._sandbox = Sandbox()
        self._rootfs: RunRootfs | None = None

    @property
    def pid(self) -> int | None:
        """Host PID of the image's PID-namespace init (bwrap's reaper)."""
        return self._sandbox.pid

    def start(self) -> "RunningImage":
        """Unpack (once), set up the run directory and start the command; returns at once.

        Raises RunError (bwrap missing, no user namespaces, an image of another architecture and no
        qemu emulation, a port taken, no command, the sandbox failed to start), ArchiveError
        from unpacking.
        """
        if self._sandbox.started:
            raise RunError("this RunningImage was already started; make a new one")
        bwrap = check_host()
        if self.emulated:
            try:
                ensure_emulation(self.platform.architecture, what=f"running a {self.platform} image",
                                 binfmt=self._binfmt, log=self._log)
            except BuildError as exc:
                raise RunError(str(exc)) from None
            wait = f"; its ports get {self.ready_timeout:g} s to answer" if self._ports.container_ports else ""
            self._log(f"the image is for {self.platform}: its programs run through qemu user emulation "
                      f"(several times slower{wait})")
        command = image_command(self.image, self.env)
        idmap = host_idmap()
        self._rootfs = rootfs = RunRootfs(self.image, self.cache, idmap, limits=self._limits)
        try:
            self._ports.listen()
            rootfs.prepare()
            self._sandbox.start(bwrap, command, rootfs.spec, rootfs.lower, idmap,
                                stdout=self._stdout, stderr=self._stderr)
            self._ports.start(self._sandbox.userns, self._sandbox.netns, rootfs.ports_dir)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def returncode(self) -> int | None:
        return self._sandbox.returncode

    def pids(self) -> list[int]:
        """Host PIDs of every process in the image's PID namespace (empty once stopped)."""
        return self._sandbox.pids()

    @property
    def run_env(self) -> dict[str, str]:
        """The run's environment as far as readiness cares: the image's Env with ``env`` on top."""
        return {**self.image.config.env_dict(), **self.env}

    @property
    def health_port(self) -> int | None:
        """The host port whose ``GET /`` must answer Healthy (a scoring image's published 5001), or None."""
        return health.health_port(self.run_env, self.publish)

    @property
    def ready_timeout(self) -> float:
        """``wait_until_ready``'s default, ``SLOWDOWN`` times longer under emulation.

        ``DEFAULT_READY_TIMEOUT``, or a scoring image's own ``WORKER_TIMEOUT`` when longer
        (gunicorn allows init() that long).
        """
        base = DEFAULT_READY_TIMEOUT
        if self.health_port is not None:
            base = health.ready_timeout(self.run_env, DEFAULT_READY_TIMEOUT)
        return base * (SLOWDOWN if self.emulated else 1)

    def wait_until_ready(self, timeout: float | None = None,
                         progress: Callable[[str], None] | None = None) -> None:
        """Return once every published container port accepts connections and a scoring image answers Healthy.

        ``progress`` hears a line when the scoring server is not Healthy yet, then every
        ``PROGRESS_EVERY`` seconds. Raises RunError if the command exits first or a port does
        not answer within ``timeout`` seconds (default: ``ready_timeout``, which allows for
        emulation); StillStarting (a RunError) if the ports answer but the health probe does
        not say Healthy in that time.
        """
        if not self._sandbox.started:
            raise RunError("the image is not running: call start() first")
        if timeout is None:
            timeout = self.ready_timeout
        pending = self._ports.container_ports
        deadline = time.monotonic() + timeout
        while pending:
            status = self._sandbox.returncode
            if status is not None:
                raise RunError(f"the image's command exited with status {status} before port {pending[0]} answered; see its log above")
            pending = [p for p in pending if not self._ports.answers(p)]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise RunError(f"port {pending[0]} in the image did not answer within {timeout:g} s; see its log above")
            time.sleep(_READY_POLL)
        port = self.health_port
        if port is not None:
            self._wait_until_healthy(port, deadline, timeout, progress)

    def _wait_until_healthy(self, port: int, deadline: float, timeout: float,
                            progress: Callable[[str], None] | None) -> None:
        url = f"http://127.0.0.1:{port}/"
        started = time.monotonic()
        next_note = started
        while True:
            status = self._sandbox.returncode
            if status is not None:
                raise RunError(f"the image's command exited with status {status} before GET {url} answered "
                               f"{health.HEALTHY}; see its log above")
            answer = health.probe(port)
            if not answer:
                return
            now = time.monotonic()
            if now > deadline:
                raise StillStarting(f"the scoring server has not answered GET {url} with {health.HEALTHY} within "
                                    f"{timeout:g} s ({answer}): it is still starting, or its init() failed (see its log above)")
            if progress is not None and now >= next_note:
                progress(f"waiting for the scoring server to answer GET {url} with {health.HEALTHY} "
                         f"({answer}; {now - started:.0f} s, up to {timeout:g} s)")
                next_note = now + PROGRESS_EVERY
            time.sleep(_HEALTH_POLL)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the command to end on its own; its exit status (raises TimeoutExpired)."""
        if not self._sandbox.started:
            raise RunError("the image is not running: call start() first")
        return self._sandbox.wait(timeout)

    def stop(self) -> int | None:
        """Stop the image (SIGTERM, grace, SIGKILL) and clean up; idempotent.

        Returns the command's exit status (None if it never started).
        """
        status = self._sandbox.stop(self.stop_timeout)
        self._ports.stop()
        self._sandbox.close()
        if self._rootfs is not None:
            self._rootfs.remove()
        return status

    def __enter__(self) -> "RunningImage":
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()


class _Terminated(BaseException):
    """SIGTERM arrived: stop the image and return."""


def run_image(image: Image, cache: BlobCache, *, publish: Mapping[int, int] | None = None,
              env: Mapping[str, str] | None = None, on_ready: Callable[[RunningImage], None] | None = None,
              stop_timeout: float = DEFAULT_STOP_TIMEOUT, ready_timeout: float | None = None,
              log: Callable[[str], None] = lambda _: None) -> int:
    """Run ``image`` in the foreground until its command ends, Ctrl-C or SIGTERM.

    Example::

        status = run_image(image, cache, publish={18080: 5001},
                           on_ready=lambda r: print("serving on http://127.0.0.1:18080"))

    ``on_ready`` is called once, when every published port answers (at once without ports)
    and a scoring image answers ``GET /`` with Healthy; ``log`` hears progress while it
    waits. After ``ready_timeout`` seconds (default: ``RunningImage.ready_timeout``, longer
    for an image run through qemu) a scoring image still not Healthy is said to be still
    starting and keeps running: ``on_ready`` comes when it answers.
    Returns the command's exit status, or 143 after SIGTERM; after Ctrl-C the image is
    stopped and KeyboardInterrupt re-raised (the CLI exits 130).

    Raises RunError (see ``RunningImage.start`` and ``wait_until_ready``), ArchiveError.
    """
    running = RunningImage(image, cache, publish=publish, env=env, stop_timeout=stop_timeout, log=log)
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
            try:
                running.wait_until_ready(ready_timeout, progress=log)
            except StillStarting as exc:
                log(f"{exc}; it keeps running and is reported ready once it answers (Ctrl-C stops it)")
                running.wait_until_ready(math.inf)
            on_ready(running)
        return running.wait()
    except _Terminated:
        running.stop()
        return 128 + signal.SIGTERM
    finally:
        running.stop()
        if in_main:
            signal.signal(signal.SIGTERM, previous)
