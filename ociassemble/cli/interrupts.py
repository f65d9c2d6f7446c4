"""Ctrl-C and SIGTERM in bounded time: the cleanup runs once, and a stuck one is cut short.

The first signal raises KeyboardInterrupt, so the cleanup paths run (temp files
removed, the cache left consistent), and arms an alarm; when the cleanup does not finish
within ``grace`` seconds (a lock held by the interrupted code), or a second signal comes,
the process exits 130 at once. What that can leave (a temp file in the cache's tmp/, a
``.<output>.tmp-<pid>-…`` beside the output) the next run or ``cache verify --fix``
removes: outputs are only ever renamed into place whole.
"""

from __future__ import annotations

import os
import signal

from ..errors import EXIT_INTERRUPTED
from .progress import PROG

__all__ = ["INTERRUPT_GRACE", "Interrupts"]

#: Seconds the cleanup after Ctrl-C/SIGTERM may take before the process leaves anyway.
INTERRUPT_GRACE = 15


class Interrupts:
    """The handlers of one run: ``install`` before the command, ``uninstall`` after it."""

    def __init__(self, grace: float = INTERRUPT_GRACE) -> None:
        self.grace = grace
        self.count = 0

    def install(self) -> None:
        self._previous = {sig: signal.signal(sig, handler) for sig, handler in
                          ((signal.SIGINT, self.on_signal), (signal.SIGTERM, self.on_signal),
                           (signal.SIGALRM, self.on_alarm))}

    def uninstall(self) -> None:
        """Disarm and put the previous handlers back (``main`` may run inside another program).

        After an interrupt they stay: the deadline must also cover the interpreter's exit,
        which joins the worker threads (concurrent.futures) and could wait there.
        """
        if self.count:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in getattr(self, "_previous", {}).items():
            signal.signal(sig, handler)

    def on_signal(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.count > 1:
            self._leave("interrupted again; leaving now")
        signal.setitimer(signal.ITIMER_REAL, self.grace)
        raise KeyboardInterrupt

    def on_alarm(self, signum: int, frame: object) -> None:
        self._leave(f"interrupted; the cleanup did not finish in {self.grace:g} s, leaving now "
                    "(the next run removes what it left)")

    @staticmethod
    def _leave(message: str) -> None:
        try:
            os.write(2, f"{PROG}: {message}\n".encode())
        finally:
            os._exit(EXIT_INTERRUPTED)
