"""Publishing ports: host ``127.0.0.1:HOST_PORT`` forwarded into the image's private network.

The image's network namespace is private, and belongs to the run's user namespace. Two
halves forward each published port:

* ours: a listening socket on the host's ``127.0.0.1:HOST_PORT`` (bound before the image
  starts, so a taken port fails the run early); each accepted connection is served by a
  thread that connects to the Unix socket ``<run dir>/ports/CONTAINER_PORT.sock``, waits
  for the relay's "connected" byte, then copies bytes both ways;
* the image's: ``port_relay.py``, one process inside the image's user and network
  namespaces (it joins them before starting a thread, which our threaded process cannot
  do), listening on those Unix sockets and dialing ``127.0.0.1:CONTAINER_PORT`` there.

The same design serves root and other users; the relay is outside the image's PID
namespace and mount namespace, sees none of the image's files, and exits when we close
its stdin.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Mapping

from ..errors import RunError
from .port_relay import CONNECTED, pump

__all__ = ["PortForwarder", "PublishedPorts"]

#: the relay, run by path (its pump and "connected" byte serve our half too)
_RELAY = Path(__file__).with_name("port_relay.py")
#: How long a connection waits for the relay to start and the port in the image to accept.
_DIAL_TIMEOUT = 5.0


class _Relay:
    """The image's half: ``port_relay.py`` and the folder of its Unix sockets."""

    def __init__(self, userns_fd: int, netns_fd: int, ports_dir: Path, ports: list[int]) -> None:
        self._dir_fd = os.open(ports_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._proc = subprocess.Popen([sys.executable, "-I", "-S", str(_RELAY), str(userns_fd), str(netns_fd),
                                       str(ports_dir), *map(str, ports)],
                                      stdin=subprocess.PIPE, pass_fds=(userns_fd, netns_fd),
                                      start_new_session=True)  # a terminal's Ctrl-C is ours to handle, not its

    def dial(self, container_port: int, timeout: float) -> socket.socket | None:
        """A Unix socket connected through the relay to ``container_port`` in the image, or None."""
        deadline = time.monotonic() + timeout
        # through the held folder fd: short, and immune to the run dir's path length
        path = f"/proc/self/fd/{self._dir_fd}/{container_port}.sock"
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                s.connect(path)
                if s.recv(1) == CONNECTED:
                    s.settimeout(None)
                    return s
                s.close()
                return None
            except OSError as exc:
                s.close()
                if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED) or time.monotonic() > deadline \
                        or self._proc.poll() is not None:
                    return None
                time.sleep(0.02)  # the relay is still starting

    def stop(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._dir_fd)


class PortForwarder:
    """``127.0.0.1:host_port`` on the host ⇄ ``127.0.0.1:container_port`` in the image's network."""

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
        self._relay: _Relay | None = None

    def start(self, relay: _Relay) -> None:
        self._relay = relay
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
        assert self._relay is not None
        up = self._relay.dial(self.container_port, _DIAL_TIMEOUT)
        if up is None:
            conn.close()
            return
        # small request/response writes: without TCP_NODELAY, Nagle's algorithm meets the
        # peer's delayed ACK and stalls replies by tens of ms
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if self._stopped.is_set():
                conn.close()
                up.close()
                return
            self._active.update((conn, up))
        back = threading.Thread(target=pump, args=(up, conn), daemon=True)
        back.start()
        pump(conn, up)
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


class PublishedPorts:
    """Every port a run publishes: checked at once, bound by ``listen``, forwarded by ``start``.

    ``publish`` maps host ports (on 127.0.0.1) to ports inside the image.
    Raises RunError for a port outside 1 to 65535.
    """

    def __init__(self, publish: Mapping[int, int] | None) -> None:
        self.mapping = dict(publish or {})
        for host_port, container_port in self.mapping.items():
            if not (0 < host_port < 65536 and 0 < container_port < 65536):
                raise RunError(f"cannot publish {host_port} -> {container_port}: ports are 1 to 65535")
        self._forwarders: list[PortForwarder] = []
        self._relay: _Relay | None = None

    @property
    def container_ports(self) -> list[int]:
        return sorted(set(self.mapping.values()))

    def listen(self) -> None:
        """Bind every host port now (raises RunError naming a taken one); forward nothing yet."""
        for host_port, container_port in sorted(self.mapping.items()):
            self._forwarders.append(PortForwarder(host_port, container_port))

    def start(self, userns_fd: int, netns_fd: int, ports_dir: Path) -> None:
        """Start the relay in the image's namespaces (fds kept open by the caller) and forward each bound port."""
        if not self.container_ports:
            return
        self._relay = _Relay(userns_fd, netns_fd, ports_dir, self.container_ports)
        for f in self._forwarders:
            f.start(self._relay)

    def answers(self, container_port: int) -> bool:
        """Whether ``container_port`` accepts a connection inside the image right now."""
        if self._relay is None:
            return False
        s = self._relay.dial(container_port, 1.0)
        if s is None:
            return False
        s.close()
        return True

    def stop(self) -> None:
        """Close every listener and cut open connections, then stop the relay; idempotent."""
        for f in self._forwarders:
            f.stop()
        self._forwarders = []
        if self._relay is not None:
            self._relay.stop()
            self._relay = None
