"""The console script (``ociassemble``) and ``python -m ociassemble``: Ctrl-C is an interrupt from our first line.

The command line's modules take ~0.1 s to import, before ``cli.main`` installs its
handlers (``cli.interrupts``); a Ctrl-C or SIGTERM in that time ended the process with
Python's KeyboardInterrupt traceback. Nothing has been written by then, so until ``main``
takes over (and after it hands back) the signal just says so and leaves.
"""

from __future__ import annotations

import os
import signal

__all__ = ["entry"]

_EXIT_INTERRUPTED = 130  # errors.EXIT_INTERRUPTED, not imported: that import is the time this covers


def _early(signum: int, frame: object) -> None:
    os.write(2, b"ociassemble: interrupted; nothing was left half-written\n")
    os._exit(_EXIT_INTERRUPTED)


def entry() -> None:
    # until main installs its own handlers (argument parsing included), and again after it
    # puts them back, a signal leaves at once: there is nothing to clean up then
    signal.signal(signal.SIGINT, _early)
    signal.signal(signal.SIGTERM, _early)
    from .cli import entry as cli_entry

    cli_entry()


if __name__ == "__main__":
    entry()
