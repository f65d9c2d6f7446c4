"""The exceptions the scoring server raises, each named for the situation and mapped to one answer."""

from __future__ import annotations

__all__ = [
    "ScoringServerError",
    "StartupError",
    "ScriptLoadError",
    "ScriptInitError",
    "InputError",
    "BadInput",
    "UnsupportedInput",
    "UnsupportedMethod",
    "RunFunctionError",
    "ScoringTimeout",
]


class ScoringServerError(Exception):
    """Root of the server's own errors."""


class StartupError(ScoringServerError):
    """The worker cannot serve: the log line says why, the traceback follows it.

    ``headline`` is the one line an operator greps for.
    """

    headline = "Scoring server failed to start"


class ScriptLoadError(StartupError):
    """The entry script could not be imported, or lacks init()/run(), or run() has an unusable signature."""

    headline = "User's score script could not be loaded"


class ScriptInitError(StartupError):
    """The user's init() raised."""

    headline = "User's init function failed"


class InputError(ScoringServerError):
    """The request cannot be turned into run()'s arguments; ``args[0]`` is the client-facing message."""


class BadInput(InputError):
    """Answered 400."""


class UnsupportedInput(InputError):
    """Answered 415."""


class UnsupportedMethod(InputError):
    """The method reached /score but the script does not take it: OPTIONS answers 200, others 405."""

    def __init__(self, method: str) -> None:
        super().__init__(f"Unsupported HTTP method: {method}")
        self.method = method


class RunFunctionError(ScoringServerError):
    """The user's run() raised; the original exception is the ``__cause__``."""


class ScoringTimeout(ScoringServerError):
    """run() was interrupted after SCORING_TIMEOUT_MS."""

    def __init__(self, timeout_ms: int) -> None:
        super().__init__(f"Scoring timeout after {timeout_ms} ms")
        self.timeout_ms = timeout_ms
