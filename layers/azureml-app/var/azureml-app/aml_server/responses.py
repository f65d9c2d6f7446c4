"""AMLResponse (the response class score.py files return) and the server's JSON error answers."""

from __future__ import annotations

import json
from typing import Any, Mapping

from flask import Response

__all__ = ["AMLResponse", "error_response", "RUN_FAILED_HEADER"]

# Tells Azure ML's front end whether a 5xx came from the user's run() ("True")
# or from the server itself ("False"); every AMLResponse carries it.
RUN_FAILED_HEADER = "x-ms-run-function-failed"


class AMLResponse(Response):
    """A Flask response built the way Azure ML's ``AMLResponse`` builds it.

    ``message`` is sent as is (str/bytes) unless ``json_str`` is true, when it is
    ``json.dumps``-ed; ``None`` becomes ``{}``.  A header value ``"a, b"`` is sent
    as two header lines (the comma is the repeat separator of RFC 7230 §3.2.2).

    Example::

        return AMLResponse(png_bytes, 200, {"Content-Type": "image/png"})
    """

    def __init__(
        self,
        message: Any,
        status_code: int,
        response_headers: Mapping[str, str] | None = None,
        json_str: bool = False,
        run_function_failed: bool = False,
    ) -> None:
        headers = dict(response_headers or {})
        if message is None:
            super().__init__(json.dumps({}), status=status_code, mimetype="application/json")
        elif json_str:
            super().__init__(json.dumps(message), status=status_code, mimetype="application/json")
        else:
            super().__init__(message, status=status_code)
            # The caller's Content-Type replaces the default one instead of adding a
            # second line; matched case-insensitively, unlike the reference.
            if any(name.lower() == "content-type" for name in headers):
                self.headers.remove("Content-Type")
        self.headers[RUN_FAILED_HEADER] = str(run_function_failed)
        for name, value in headers.items():
            for part in value.split(","):
                self.headers.add(name, part.strip())


def error_response(status_code: int, message: str, run_function_failed: bool = False) -> AMLResponse:
    """The server's error answer: always the JSON object ``{"message": message}``."""
    return AMLResponse({"message": message}, status_code, json_str=True, run_function_failed=run_function_failed)
