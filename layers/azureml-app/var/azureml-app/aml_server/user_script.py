"""UserScript: the user's score.py, loaded by path, its run() classified, init()/run() invoked.

The kind of a script decides how /score calls run():

* ``@rawhttp`` (a marker set by ``azureml.contrib.services.aml_request.rawhttp``):
  run(request) gets the Flask request;
* ``@input_schema``/``@output_schema`` (inference_schema): run(**params) gets the
  named values of a JSON object;
* undecorated: run(data) gets the body as text.

A run() that declares a ``request_headers`` parameter also gets the request's
headers as a dict, as in the reference.
"""

from __future__ import annotations

import enum
import importlib.util
import inspect
import logging
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

from flask import Request
from inference_schema.schema_util import is_schema_decorated

from .deadline import DeadlineExceeded, Stopwatch, scoring_deadline
from .errors import RunFunctionError, ScoringTimeout, ScriptInitError, ScriptLoadError
from .inputs import InputParser, RawRequestParser, SchemaParser, TextBodyParser

__all__ = ["ScriptKind", "UserScript", "TimedResult", "load_user_script", "RAWHTTP_MARKER"]

logger = logging.getLogger("aml_server.user_script")

# The attribute @rawhttp sets on the function it decorates.  A marker on the
# function, not the reference's module-level flag, so that loading a second
# script in the same process (tests) cannot inherit the first one's kind.
RAWHTTP_MARKER = "__aml_rawhttp__"

# Modules whose own ``rawhttp`` sets a process-wide ``_rawHttpRequested`` flag
# (the reference package, and the real azureml-contrib-services if a user
# installs it): honoured so scripts importing from them still get the request.
_LEGACY_RAWHTTP_MODULES = (
    "azureml_inference_server_http.api.aml_request",
    "azureml.contrib.services.aml_request",
)

# Same module name as the reference gives the script: inference_schema keys its
# schema registry by "<module>.<function>", and pickles made by score.py name it.
ENTRY_MODULE_NAME = "entry_module"

REQUEST_HEADERS_PARAMETER = "request_headers"


class ScriptKind(enum.Enum):
    """How run() takes its input."""

    RAW = "rawhttp"
    SCHEMA = "schema"
    TEXT = "text"


@dataclass(frozen=True)
class TimedResult:
    """run()'s return value and how long it took."""

    output: Any
    elapsed_ms: float


def _is_rawhttp(run: Callable[..., Any]) -> bool:
    function: Any = run
    while function is not None:
        if getattr(function, RAWHTTP_MARKER, False):
            return True
        function = getattr(function, "__wrapped__", None)
    return any(getattr(sys.modules.get(name), "_rawHttpRequested", False) for name in _LEGACY_RAWHTTP_MODULES)


def _import_by_path(path: str, module_name: str) -> ModuleType:
    if not os.path.isfile(path):
        raise ScriptLoadError(f"Entry script {path} does not exist (check AZUREML_ENTRY_SCRIPT and AML_APP_ROOT)")
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ScriptLoadError(f"Entry script {path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as a normal import would be: dataclasses and
    # pickle look classes up in sys.modules by their __module__.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as ex:  # SystemExit from a script is a failed import too
        sys.modules.pop(module_name, None)
        raise ScriptLoadError(f"Entry script {path} raised while being imported: {ex!r}") from ex
    return module


def _prepend_sys_path(directory: str) -> None:
    if directory in sys.path:
        sys.path.remove(directory)
    sys.path.insert(0, directory)


@dataclass(frozen=True)
class UserScript:
    """A loaded score.py: what to call, and how to build its arguments."""

    path: str
    init: Callable[[], Any]
    run: Callable[..., Any]
    kind: ScriptKind
    parser: InputParser
    takes_request_headers: bool

    def invoke_init(self) -> None:
        """Call init() once; raises ScriptInitError (cause: the user's exception)."""
        logger.info("Invoking user's init function")
        try:
            self.init()
        except BaseException as ex:
            raise ScriptInitError(f"{type(ex).__name__}: {ex}") from ex
        logger.info("User's init has completed successfully")

    def invoke_run(self, request: Request, timeout_ms: int) -> TimedResult:
        """Build run()'s arguments from ``request`` and call it within the scoring deadline.

        Raises:
            InputError: the request does not fit this kind of script (raised before run()).
            ScoringTimeout: run() overran ``timeout_ms``.
            RunFunctionError: run() raised (cause: the user's exception).
        """
        arguments = self.parser(request)
        if self.takes_request_headers:
            arguments[REQUEST_HEADERS_PARAMETER] = dict(request.headers)
        watch = Stopwatch()
        try:
            with scoring_deadline(timeout_ms), watch:
                output = self.run(**arguments)
        except DeadlineExceeded:
            raise ScoringTimeout(timeout_ms) from None
        except Exception as ex:
            raise RunFunctionError(f"run() raised {type(ex).__name__}: {ex}") from ex
        return TimedResult(output=output, elapsed_ms=watch.elapsed_ms)


def _classify(run: Callable[..., Any], path: str) -> tuple[ScriptKind, InputParser, bool]:
    parameters = list(inspect.signature(run).parameters.values())
    allowed = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind not in allowed for p in parameters):
        raise ScriptLoadError(f"run() in {path} cannot accept positional-only arguments, *args, or **kwargs.")
    takes_headers = any(p.name == REQUEST_HEADERS_PARAMETER for p in parameters)
    inputs = [p for p in parameters if p.name != REQUEST_HEADERS_PARAMETER]
    if not inputs:
        if takes_headers:
            raise ScriptLoadError(f'run() in {path} needs to accept an argument other than "request_headers".')
        raise ScriptLoadError(f"run() in {path} needs to accept an argument for input data.")

    raw, schema = _is_rawhttp(run), is_schema_decorated(run)
    if raw and schema:
        raise ScriptLoadError(f"run() in {path} cannot be decorated with both @rawhttp and @input_schema")
    if raw:
        logger.info("run() is decorated with @rawhttp: it gets the Flask request")
        return ScriptKind.RAW, RawRequestParser(inputs[0].name), takes_headers
    if schema:
        logger.info("run() is decorated with @input_schema: it gets %s", ", ".join(p.name for p in inputs))
        return ScriptKind.SCHEMA, SchemaParser(inputs), takes_headers
    logger.info("run() is not decorated: it gets the body as text")
    return ScriptKind.TEXT, TextBodyParser(inputs[0].name), takes_headers


def load_user_script(
    path: str, app_root: str, module_name: str = ENTRY_MODULE_NAME, source_dir: str = ""
) -> UserScript:
    """Import the script at ``path`` and check it has init() and a usable run().

    The script's directory goes first on ``sys.path`` so its sibling modules
    import; the app root and then the source folder (``source_dir``, the absolute
    AZUREML_SOURCE_DIRECTORY, if any) are appended, as the reference does, so a
    script nested in the source tree (``src/scoring/score.py``) imports the
    packages at the source root (``src/utils/``) by their own names.

    Example::

        script = load_user_script("/var/azureml-app/src/score.py", "/var/azureml-app")
        script.invoke_init()

    Raises:
        ScriptLoadError: the file is missing, its import raised, or init/run are missing or unusable.
    """
    path = os.path.abspath(path)
    _prepend_sys_path(os.path.dirname(path))
    for directory in (app_root, source_dir):
        if directory and directory not in sys.path:
            sys.path.append(directory)
    module = _import_by_path(path, module_name)

    if not callable(getattr(module, "init", None)):
        raise ScriptLoadError(f"User script at {path} does not have a init() function defined.")
    if not callable(getattr(module, "run", None)):
        raise ScriptLoadError(f"User script at {path} does not have a run() function defined.")

    # Some Azure ML SDKs generate a driver script that forwards to the real one
    # as ``driver_module``; its run() loses inference_schema's signature, so the
    # real run() is called directly while the driver's init() is kept.
    run = module.run
    driver_target = getattr(module, "driver_module", None)
    if isinstance(driver_target, ModuleType) and callable(getattr(driver_target, "run", None)):
        logger.info("Found driver script at %s and the score script at %s", path, driver_target.__file__)
        run = driver_target.run
    else:
        logger.info("Found user script at %s", path)

    kind, parser, takes_headers = _classify(run, path)
    return UserScript(
        path=path, init=module.init, run=run, kind=kind, parser=parser, takes_request_headers=takes_headers
    )
