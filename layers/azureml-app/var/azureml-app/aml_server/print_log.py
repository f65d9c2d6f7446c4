"""print() from score.py as log records: one INFO line per call, with the request's id, as the reference logs them.

The reference server replaces ``builtins.print`` in its worker: a print to
stdout becomes an INFO record of its ``azmlinfsrv.print`` logger (so it gets a
timestamp, level and pid like every other line, and App Insights receives it as
a trace); a print to any other file is printed as asked.  Here the logger is
``aml_server.print``, and a line printed while a request is being answered ends
with that request's ``x-request-id`` (the reference leaves it out, so a print
could not be matched with its request).

One deliberate difference: only prints to the stdout the process had when the
hook was installed are logged.  The reference logs whatever ``sys.stdout`` is at
the time, so a score.py capturing its own prints with
``contextlib.redirect_stdout`` gets nothing; here it gets them.

Installed by the entry points (wsgi.py, ``python create_app.py``), never by
create_app(): tests that build apps keep their own print.
"""

from __future__ import annotations

import builtins
import functools
import logging
import sys
from typing import Any, Callable

__all__ = ["PRINT_LOGGER", "install_print_logger", "current_request_id", "REQUEST_ID_ATTRIBUTE", "TEXT_ATTRIBUTE"]

PRINT_LOGGER = "aml_server.print"

# The attribute a print record carries with the request id ("" outside a request),
# read by the App Insights handler.
REQUEST_ID_ATTRIBUTE = "aml_request_id"
# The printed text alone (the log line may add the request id), for App Insights.
TEXT_ATTRIBUTE = "aml_print_text"


def current_request_id() -> str:
    """The x-request-id of the request being answered on this thread, or ""."""
    try:
        from flask import g, has_request_context
    except ImportError:  # pragma: no cover - flask is always there in the image
        return ""
    if not has_request_context():
        return ""
    ids = g.get("aml_request_ids")
    return getattr(ids, "request_id", "") or ""


def _print_to_logger(original: Callable[..., Any], logger: logging.Logger, stdout: Any) -> Callable[..., None]:
    @functools.wraps(original)
    def print_to_logger(*objects: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None,
                        flush: bool = False) -> None:
        target = file or sys.stdout
        if target is not stdout:
            original(*objects, sep=sep, end=end, file=file, flush=flush)
            return
        content = (" " if sep is None else sep).join(map(str, objects))
        request_id = current_request_id()
        extra = {REQUEST_ID_ATTRIBUTE: request_id, TEXT_ATTRIBUTE: content}
        if request_id:
            logger.info("%s (x-request-id=%s)", content, request_id, extra=extra)
        else:
            logger.info("%s", content, extra=extra)

    return print_to_logger


def install_print_logger() -> None:
    """Send print() to stdout through the ``aml_server.print`` logger from now on, in this process."""
    if getattr(builtins.print, "__aml_print_logger__", False):
        return
    hook = _print_to_logger(builtins.print, logging.getLogger(PRINT_LOGGER), sys.stdout)
    hook.__aml_print_logger__ = True  # type: ignore[attr-defined]
    builtins.print = hook
