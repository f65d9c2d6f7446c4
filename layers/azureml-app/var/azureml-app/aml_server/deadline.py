"""scoring_deadline: interrupt a run() that overruns SCORING_TIMEOUT_MS, and time it.

Python cannot stop a running function from another thread, so, like the
reference server, the deadline is a SIGALRM interval timer.  Signals reach only
the main thread: that is where gunicorn's sync worker (the image's worker) and
Flask's test client call the view, so the deadline holds there; under Flask's
threaded debug server (``python3 create_app.py``) it is not enforced.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Iterator

__all__ = ["DeadlineExceeded", "Stopwatch", "scoring_deadline"]


class DeadlineExceeded(Exception):
    """Raised inside run() by the timer.

    Its own class, not ``TimeoutError``: a run() whose own socket times out
    must not be reported as a scoring timeout (the reference conflates the two).
    """


@dataclass
class Stopwatch:
    """Elapsed wall time of a ``with`` block, in milliseconds (perf_counter based)."""

    started: float = 0.0
    elapsed_ms: float = 0.0

    def __enter__(self) -> "Stopwatch":
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.elapsed_ms = (time.perf_counter() - self.started) * 1000


def _raise_deadline(signum: int, frame: FrameType | None) -> None:
    raise DeadlineExceeded


def _can_use_alarm() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def scoring_deadline(timeout_ms: int) -> Iterator[None]:
    """Raise DeadlineExceeded in the block once ``timeout_ms`` have passed (main thread only).

    The previous SIGALRM handler is restored and the timer cleared on exit, so a
    user's own use of SIGALRM outside run() is unaffected.
    """
    if not _can_use_alarm():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _raise_deadline)
    signal.setitimer(signal.ITIMER_REAL, timeout_ms / 1000)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
