"""Ctrl-C and SIGTERM always end the process: cleanup runs, but in bounded time."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

# A program whose cleanup after the interrupt can never finish: it waits on a lock the
# interrupted code still holds (what a KeyboardInterrupt landing inside a library can leave).
_STUCK = """
import os, signal, sys, threading
from ociassemble.cli.interrupts import Interrupts
Interrupts(grace=float(sys.argv[1])).install()
lock = threading.Lock()
lock.acquire()
try:
    print("ready", flush=True)  # inside the try: the signal may come as soon as it is read
    threading.Event().wait(60)
except KeyboardInterrupt:
    print("cleaning up", flush=True)
    lock.acquire()
print("never here", flush=True)
"""


def _start(grace: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _STUCK, str(grace)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_cleanup_that_hangs_is_cut_short(sig: signal.Signals) -> None:
    proc = _start(grace=1.0)
    started = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    took = time.monotonic() - started
    assert proc.returncode == 130, err
    assert "cleaning up" in out and "never here" not in out
    assert "the cleanup did not finish in 1 s, leaving now" in err and "Traceback" not in err
    assert 0.9 <= took < 10, took


def test_a_second_ctrl_c_leaves_at_once() -> None:
    proc = _start(grace=60.0)
    proc.send_signal(signal.SIGINT)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "cleaning up"
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted again; leaving now" in err, err
    assert time.monotonic() - started < 10


def test_main_puts_the_previous_handlers_back() -> None:
    from ociassemble import cli

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    assert cli.main(["completion", "bash"]) == 0
    assert {s: signal.getsignal(s) for s in before} == before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
