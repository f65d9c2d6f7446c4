"""Publishing ports: host ``127.0.0.1:HOST_PORT`` forwarded into the image's private network.

The image's network namespace is private. Each published port is a listening socket
on the host's ``127.0.0.1:HOST_PORT``; each accepted connection is served by a thread
that enters the image's network namespace (``namespaces.enter_netns``, per thread)
and connects to ``127.0.0.1:CONTAINER_PORT`` there, then copies bytes both ways.
The listeners are bound before the image starts, so a taken port fails the run early.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
from typing import Mapping

from ..errors import RunError
from .namespaces import enter_netns, in_netns

__all__ = ["PortForwarder", "PublishedPorts"]

#: Bytes copied per recv: large enough for a JSON scoring request in one go.
_BUF = 1 << 16


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


class PortForwarder:
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
            enter_netns(self._netns)  # this thread only; sockets it creates live in the image's netns
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
        self._netns = -1

    @property
    def container_ports(self) -> list[int]:
        return sorted(set(self.mapping.values()))

    def listen(self) -> None:
        """Bind every host port now (raises RunError naming a taken one); forward nothing yet."""
        for host_port, container_port in sorted(self.mapping.items()):
            self._forwarders.append(PortForwarder(host_port, container_port))

    def start(self, netns_fd: int) -> None:
        """Forward each bound port into network namespace ``netns_fd`` (kept open by the caller)."""
        self._netns = netns_fd
        for f in self._forwarders:
            f.start(netns_fd)

    def answers(self, container_port: int) -> bool:
        """Whether ``container_port`` accepts a connection inside the image right now."""
        def dial() -> bool:
            try:
                socket.create_connection(("127.0.0.1", container_port), timeout=1).close()
                return True
            except OSError:
                return False

        return bool(in_netns(self._netns, dial))

    def stop(self) -> None:
        """Close every listener and cut open connections; idempotent."""
        for f in self._forwarders:
            f.stop()
        self._forwarders = []
        self._netns = -1
