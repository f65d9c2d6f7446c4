"""What the commands print: steps and progress to stderr, one result on stdout (text or ``--json``).

``Out`` is the jobs' ``events.Progress`` (steps, bytes read and sent); ``error_line`` is the
one line an error is printed as. Everything printed passes through
``redact.clean`` with the run's ``secrets``: no credential we sent, no terminal control
byte (a registry's or an image's text) reaches the terminal.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from .progress import Reporter, make_reporter
from ..redact import Secrets, clean

if TYPE_CHECKING:
    from ..image.oci import Descriptor

__all__ = ["Out", "error_line"]


class Out:
    """Where messages go: steps and progress to stderr (unless --quiet/--json), results to stdout."""

    def __init__(self, quiet: bool, as_json: bool, reporter: Reporter | None = None,
                 secrets: Secrets | None = None) -> None:
        self.quiet = quiet
        self.as_json = as_json
        self.reporter = reporter if reporter is not None else make_reporter(sys.stderr, quiet=quiet or as_json)
        #: the credentials of this run (the registry options add theirs): cleaned from all output
        self.secrets = secrets if secrets is not None else Secrets()

    def clean(self, text: str) -> str:
        return clean(text, self.secrets)

    def log(self, msg: str) -> None:
        self.reporter.step(self.clean(msg))

    def layer_bytes(self, n: int) -> None:
        self.reporter.layer_bytes(n)

    def blob_bytes(self, desc: Descriptor, n: int) -> None:
        self.reporter.blob_bytes(desc, n)

    def print(self, text: str) -> None:
        """A line of a result on stdout (``inspect --list`` prints one per file)."""
        print(self.clean(text))

    def result(self, data: dict[str, Any], text: str) -> None:
        self.reporter.close()  # the live display ends before the result is printed
        if self.as_json:
            print(self.clean(json.dumps(data, indent=2, sort_keys=True)))
        elif text:
            print(self.clean(text))


def error_line(exc: BaseException, secrets: Secrets | None = None) -> str:
    """An error's message as one line: its lines joined by "; " (the CLI never prints more),
    cleaned (``redact.clean``)."""
    return clean("; ".join(line.strip() for line in str(exc).splitlines() if line.strip()), secrets)
