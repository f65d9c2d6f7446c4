"""Process logging for the entry points (wsgi.py, create_app.py): stderr, one line per record.

create_app() itself only logs; configuring handlers is the entry point's job,
so tests that build apps leave the process's logging alone.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Iterator

from .errors import ScriptInitError, StartupError

__all__ = ["configure_logging", "log_startup_failure", "STARTUP_FAILURE_EXIT_CODE"]

# Gunicorn's WORKER_BOOT_ERROR: a worker exiting with 3 makes the arbiter stop
# instead of respawning the same failure forever; runit's finish script then
# backs off before the next try.
STARTUP_FAILURE_EXIT_CODE = 3

# Enough to see the shape of a model folder without flooding the log.
MODEL_TREE_LINE_LIMIT = 200

_FORMAT = "%(asctime)s %(levelname).1s [%(process)d] %(name)s - %(message)s"


def configure_logging(level_name: str | None = None) -> None:
    """Send records of level AZUREML_LOG_LEVEL (default INFO) and above to stderr."""
    name = (level_name or os.environ.get("AZUREML_LOG_LEVEL") or "INFO").upper()
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        level = logging.INFO
    logging.basicConfig(level=level, format=_FORMAT, stream=sys.stderr)


def _model_tree(path: str, depth: int = 0) -> Iterator[str]:
    indent = "    " * depth
    name = os.path.basename(os.path.normpath(path))
    if os.path.isdir(path):
        yield f"{indent}{name}{os.sep}"
        for child in sorted(os.listdir(path)):
            yield from _model_tree(os.path.join(path, child), depth + 1)
    else:
        yield f"{indent}{name}"


def log_startup_failure(error: StartupError, model_dir: str, logger: logging.Logger) -> None:
    """Log why the worker cannot serve: one headline, then the traceback (and the models if init failed)."""
    logger.error("%s: %s", error.headline, error)
    cause = error.__cause__ or error
    # The three-argument form: the one-argument one is Python 3.10+, and the app runs on 3.9 bases too.
    logger.error("".join(traceback.format_exception(type(cause), cause, cause.__traceback__)).rstrip())
    if isinstance(error, ScriptInitError) and model_dir and os.path.exists(model_dir):
        logger.info("Model directory contents (%s):", model_dir)
        for number, line in enumerate(_model_tree(model_dir)):
            if number == MODEL_TREE_LINE_LIMIT:
                logger.info("Output truncated: first %d lines shown.", MODEL_TREE_LINE_LIMIT)
                break
            logger.info(line)
