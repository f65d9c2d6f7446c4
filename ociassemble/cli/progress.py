"""How the command line shows work under way: live bars on a terminal, one line per step elsewhere.

``make_reporter(stream, quiet=...)`` picks one of three reporters with the same face:

* ``quiet`` (``--quiet``, ``--json``): prints nothing;
* a TTY (and ``TERM`` is not ``dumb``): ``rich`` progress bars, one per layer being
  hashed and compressed and one per blob being uploaded, with the step lines above them;
* anything else (CI logs, pipes, files): plain ``ociassemble: <step>`` lines, one per step
  and one per uploaded blob. This path never imports ``rich`` and never writes an ANSI
  escape or a carriage return, so logs stay greppable.

The library knows nothing of this module: it only calls the plain ``on_bytes`` callbacks
that ``build_layer`` and ``push_image`` accept, and the reporter turns them into output.

Example::

    reporter = make_reporter(sys.stderr, quiet=args.quiet)
    try:
        reporter.step("layer python-deps")
        build_layer(cache, sources, on_bytes=reporter.layer_bytes)
        push_image(image, cache, refs, on_bytes=reporter.blob_bytes)
    finally:
        reporter.close()
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, TextIO

from ..sizes import human_size

if TYPE_CHECKING:  # (a command that reads no image, e.g. --version or login, imports no image type)
    from ..image.oci import Descriptor

__all__ = ["PROG", "LiveReporter", "PlainReporter", "Reporter", "human_size", "make_reporter"]

PROG = "ociassemble"


class Reporter:
    """The quiet reporter, and the interface the other two implement (thread-safe)."""

    def step(self, message: str) -> None:
        """A new step begins (``layer python-deps``, ``pushing …``)."""

    def layer_bytes(self, n: int) -> None:
        """``n`` more uncompressed bytes of the current step's layer were hashed and compressed."""

    def blob_bytes(self, desc: Descriptor, n: int) -> None:
        """``n`` more bytes of blob ``desc`` were sent to the registry (concurrent blobs)."""

    def close(self) -> None:
        """Stop any live display; safe to call twice."""


class PlainReporter(Reporter):
    """One line per step and per uploaded blob; nothing else (no ANSI, no ``\\r``)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._sent: dict[str, int] = {}

    def _line(self, text: str) -> None:
        with self._lock:
            print(f"{PROG}: {text}", file=self.stream, flush=True)

    def step(self, message: str) -> None:
        self._line(message)

    def blob_bytes(self, desc: Descriptor, n: int) -> None:
        with self._lock:
            before = self._sent.get(desc.digest, 0)
            self._sent[desc.digest] = before + n
            finished = before < desc.size <= before + n
        if finished:  # once per blob, even if a retry sends some bytes again
            self._line(f"uploaded {desc.digest[:19]} ({human_size(desc.size)})")


class LiveReporter(Reporter):
    """``rich`` bars on a terminal: a bar per layer being written, a bar per blob being uploaded.

    Bars are transient: a finished one is replaced by its one-line summary, so the
    scroll-back reads like the plain log. The display starts with the first bar.
    """

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = Console(file=stream, highlight=False, soft_wrap=True)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=self.console, transient=True)
        self._lock = threading.RLock()
        self._started = False
        self._step = ""
        self._layer_task: Any = None
        self._layer_done = 0
        self._blob_sent: dict[str, int] = {}
        self._blob_tasks: dict[str, Any] = {}
        self._blob_done: set[str] = set()

    def _print(self, text: str) -> None:
        self.console.print(f"{PROG}: {text}", markup=False, highlight=False)

    def _add(self, description: str, total: int | None) -> Any:
        if not self._started:
            self.progress.start()
            self._started = True
        return self.progress.add_task(description, total=total)

    def _end_layer(self) -> None:
        if self._layer_task is not None:
            self.progress.remove_task(self._layer_task)
            self.progress.refresh()
            self._layer_task = None
            self._print(f"  {self._step}: {human_size(self._layer_done)} hashed and compressed")
        self._layer_done = 0

    def step(self, message: str) -> None:
        with self._lock:
            self._end_layer()
            self._step = message
            self._print(message)

    def layer_bytes(self, n: int) -> None:
        with self._lock:
            new = self._layer_task is None
            if new:
                self._layer_task = self._add(self._step or "layer", None)
            self._layer_done += n
            self.progress.advance(self._layer_task, n)
            if new:
                self.progress.refresh()  # show the bar now, even if the work ends before the next tick

    def blob_bytes(self, desc: Descriptor, n: int) -> None:
        with self._lock:
            if desc.digest in self._blob_done:
                return
            task = self._blob_tasks.get(desc.digest)
            new = task is None
            if task is None:
                task = self._blob_tasks[desc.digest] = self._add(f"upload {desc.digest[7:19]}", desc.size)
            self.progress.advance(task, n)
            if new:
                self.progress.refresh()
            self._blob_sent[desc.digest] = self._blob_sent.get(desc.digest, 0) + n
            if self._blob_sent[desc.digest] >= desc.size:
                self.progress.remove_task(task)
                self.progress.refresh()
                del self._blob_tasks[desc.digest]
                self._blob_done.add(desc.digest)
                self._print(f"uploaded {desc.digest[:19]} ({human_size(desc.size)})")

    def close(self) -> None:
        with self._lock:
            self._end_layer()
            if self._started:
                self.progress.stop()
                self._started = False


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM", "") not in ("dumb", "unknown")
    except (AttributeError, ValueError):
        return False


def make_reporter(stream: TextIO, *, quiet: bool = False) -> Reporter:
    """The reporter for ``stream``: quiet, live bars (a TTY) or plain lines (anything else)."""
    if quiet:
        return Reporter()
    if _is_terminal(stream):
        return LiveReporter(stream)
    return PlainReporter(stream)
