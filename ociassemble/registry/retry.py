"""When a registry operation is tried again, and how long every request to a registry waits.

There is exactly one retry layer: ``call_with_retry`` around a whole operation (one
HEAD, one manifest PUT, one blob upload attempt), retrying ``TransientRegistryError``
(connection failures, timeouts, 5xx, 408, 429) per a ``RetryPolicy``. Waiting is
shared, though: after a 429 (or a 503 with ``Retry-After``) no request to that
registry starts, from any thread or client of this process, before the time it asked
for has passed (``RegistryGate``); a rate-limited registry otherwise keeps getting the
other parallel uploads' requests during the pause it asked for.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import TransientRegistryError

__all__ = [
    "DEFAULT_RETRY",
    "FAST_RETRY",
    "RegistryGate",
    "RetryPolicy",
    "call_with_retry",
    "parse_retry_after",
    "registry_gate",
]

log = logging.getLogger("ociassemble.registry")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often one operation is tried and how long to wait between tries.

    The n-th wait is ``initial * factor**(n-1)`` capped at ``max_delay``, times a random
    jitter of ±``jitter``; a ``Retry-After`` from the registry replaces it, capped at
    ``max_retry_after``. After ``attempts`` tries the last error is raised.
    """

    attempts: int = 5
    initial: float = 1.0
    factor: float = 3.0
    max_delay: float = 30.0
    jitter: float = 0.2
    max_retry_after: float = 60.0

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_retry_after))
        base = min(self.initial * self.factor ** max(failures - 1, 0), self.max_delay)
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)


#: 5 tries, waiting about 1 s, 3 s, 9 s, 27 s (±20 %): rides out a registry restart or a
#: load balancer's burst of 503s (~40 s in all) without keeping CI waiting on a dead host.
DEFAULT_RETRY = RetryPolicy()
#: For tests: the same shape in milliseconds; a Retry-After is still honoured, up to 2 s.
FAST_RETRY = RetryPolicy(attempts=5, initial=0.02, factor=2.0, max_delay=0.2, max_retry_after=2.0)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


#: A pause shorter than this added to one under way is not announced again (the other
#: parallel requests' 429s arrive within milliseconds of the first).
_ANNOUNCE_MIN = 0.5
#: The gate re-checks its deadline this often while waiting (it may be lengthened).
_GATE_TICK = 0.25


class RegistryGate:
    """When the next request to one registry may start: after the wait it asked for.

    Shared by every thread and client talking to the same registry in this process.
    Requests already under way go on; only new ones wait.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until = 0.0

    def hold(self, seconds: float) -> bool:
        """No request starts for ``seconds`` from now; True if this begins or noticeably lengthens a pause."""
        with self._lock:
            now = time.monotonic()
            until = now + seconds
            if until <= self._until:
                return False
            announce = self._until <= now or until - self._until >= _ANNOUNCE_MIN
            self._until = until
            return announce

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._until - time.monotonic())

    def wait(self) -> None:
        """Block until the registry may be sent a request."""
        while True:
            left = self.remaining()
            if left <= 0:
                return
            time.sleep(min(left, _GATE_TICK))


_GATES: dict[str, RegistryGate] = {}
_GATES_LOCK = threading.Lock()


def registry_gate(registry: str) -> RegistryGate:
    """The process-wide gate of ``registry`` (a host[:port] as in references)."""
    with _GATES_LOCK:
        return _GATES.setdefault(registry, RegistryGate())


def call_with_retry(policy: RetryPolicy, what: str, op: Callable[[int], T]) -> T:
    """Run ``op(attempt)`` until it returns, retrying TransientRegistryError per ``policy``.

    ``attempt`` counts from 0, so an operation can tell a first try from a retry (e.g.
    settle a lost PUT with a HEAD). Raises the last TransientRegistryError after
    ``policy.attempts`` tries, and any other error at once.
    """
    failures = 0
    while True:
        try:
            return op(failures)
        except TransientRegistryError as exc:
            failures += 1
            if failures >= policy.attempts:
                if failures > 1:
                    exc.args = (f"{exc.args[0]} (gave up after {failures} tries)", *exc.args[1:])
                raise
            wait = policy.delay(failures, exc.retry_after)
            log.warning("%s; retry %d/%d in %.1f s", exc, failures, policy.attempts - 1, wait)
            time.sleep(wait)
