"""``free_port``, in a module of its own that imports nothing of ociassemble: the app's
differential suite (tests/app/differential.py) also runs inside the Python 3.9 and 3.13
bases (tests/app/test_app_pythons.py), where ociassemble (Python 3.11+) is not importable.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

__all__ = ["free_port"]


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    A port from bind(0) is an ephemeral one, and until the server binds it, any outgoing
    connection (the health checks of the other servers starting at the same time) may be
    given it: seen as gunicorn's "Address already in use". Ports below the range are
    never handed out that way.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, max(low, 20001))
        with _LOCK:
            if port in _GIVEN:  # free still, but given to a server that has not bound it yet
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _GIVEN.add(port)
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")


#: Every port this process handed out: ~35 servers started at once (the scoring contract's
#: oracles and image runs) drawing from ~12,000 ports collide about one run in twenty
#: (the birthday bound) when a port is free only because its server has not bound it yet.
_GIVEN: set[int] = set()
_LOCK = threading.Lock()
