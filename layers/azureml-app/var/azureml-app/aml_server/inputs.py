"""Input parsers: turn a /score request into the keyword arguments of the user's run().

One parser per kind of score.py: undecorated (the body as text), schema
decorated (named parameters from a JSON object) and ``@rawhttp`` (the request
itself).  GET requests carry their input as query parameters, each parsed as a
JSON value when it is one (``?a=1&b=[1,2]&c=x`` gives ``{"a": 1, "b": [1, 2], "c": "x"}``;
a repeated name gives a list).
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Protocol, Sequence

from flask import Request

from .errors import BadInput, UnsupportedInput, UnsupportedMethod

__all__ = ["InputParser", "RawRequestParser", "TextBodyParser", "SchemaParser", "query_parameters"]


class InputParser(Protocol):
    """Maps a request to run()'s keyword arguments.

    Raises:
        BadInput, UnsupportedInput, UnsupportedMethod.
    """

    def __call__(self, request: Request) -> dict[str, Any]: ...


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def query_parameters(request: Request) -> dict[str, Any]:
    """The query string as a JSON-like object (names are case-sensitive)."""
    parsed: dict[str, Any] = {}
    for name in request.args.keys():
        values = request.args.getlist(name)
        parsed[name] = _json_or_text(values[0]) if len(values) == 1 else [_json_or_text(v) for v in values]
    return parsed


class RawRequestParser:
    """``@rawhttp``: run() gets the request whatever its method (so it sees OPTIONS too)."""

    def __init__(self, parameter_name: str) -> None:
        self.parameter_name = parameter_name

    def __call__(self, request: Request) -> dict[str, Any]:
        return {self.parameter_name: request}


class TextBodyParser:
    """Undecorated run(data): the body decoded as UTF-8 (a byte-order mark is kept).

    The raw body is used whatever the Content-Type: the reference reads Flask's
    ``request.data``, which is empty for a form-encoded post (curl's ``-d``
    default), so its run() silently gets ``""``.
    """

    def __init__(self, parameter_name: str) -> None:
        self.parameter_name = parameter_name

    def __call__(self, request: Request) -> dict[str, Any]:
        if request.method == "GET":
            return {self.parameter_name: json.dumps(query_parameters(request))}
        if request.method != "POST":
            raise UnsupportedMethod(request.method)
        try:
            return {self.parameter_name: request.get_data(cache=True, parse_form_data=False).decode("utf-8")}
        except UnicodeDecodeError as ex:
            raise BadInput(f"Input cannot be decoded as UTF-8: {ex}") from None


class SchemaParser:
    """run() decorated with ``@input_schema``: each parameter taken by name from a JSON object.

    inference_schema's wrapper then converts each value to its declared type.
    """

    def __init__(self, parameters: Sequence[inspect.Parameter]) -> None:
        self.parameters = list(parameters)

    def __call__(self, request: Request) -> dict[str, Any]:
        if request.method == "GET":
            return self._extract(query_parameters(request))
        if request.method != "POST":
            raise UnsupportedMethod(request.method)
        if not request.is_json:
            raise UnsupportedInput("Expects Content-Type to be application/json")
        body = request.get_data(cache=True, parse_form_data=False)
        if not body:
            raise BadInput("POST body is empty. Expecting a JSON dictionary.")
        try:
            document = json.loads(body)
        except ValueError as ex:  # JSONDecodeError, or UnicodeDecodeError for bytes that are no UTF-8/16/32
            raise BadInput(f"POST body could not be decoded as JSON: {ex}") from None
        if not isinstance(document, dict):
            raise BadInput("POST body should be a JSON dictionary.")
        return self._extract(document)

    def _extract(self, document: dict[str, Any]) -> dict[str, Any]:
        arguments: dict[str, Any] = {}
        for parameter in self.parameters:
            value = document.get(parameter.name, parameter.default)
            if value is inspect.Parameter.empty:
                raise BadInput(f"A value is not provided for the {parameter.name!r} parameter.")
            arguments[parameter.name] = value
        return arguments
