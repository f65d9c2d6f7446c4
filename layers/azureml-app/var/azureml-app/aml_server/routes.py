"""The scoring blueprint: /, /swagger.json and /score, with their header and error rules.

Status codes and messages are those of azureml-inference-server-http 1.5.1.
The request-id hooks belong to the blueprint, so, as in the reference, a 404
for an unknown path or a 405 from routing (answered by the app's handler) has
no id headers, while every answer of a route has them.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from .appinsights import AppInsightsClient
from .config import ServerConfig
from .errors import BadInput, RunFunctionError, ScoringTimeout, UnsupportedInput, UnsupportedMethod
from .request_ids import RequestIds, add_request_id_headers, read_request_ids
from .responses import RUN_FAILED_HEADER, AMLResponse, error_response
from .swagger import SwaggerDocuments, SwaggerVersionError
from .user_script import UserScript

__all__ = ["scoring_blueprint", "register_http_error_handler", "HEALTHY", "RUN_ERROR", "INTERNAL_ERROR"]

logger = logging.getLogger("aml_server.routes")

HEALTHY = "Healthy"
RUN_ERROR = "An unexpected error occurred in scoring script. Check the logs for more info."
INTERNAL_ERROR = "An unexpected internal error occurred. Check the logs for more info."
METHOD_NOT_ALLOWED = "Method not allowed"
EXEC_TIME_HEADER = "x-ms-run-fn-exec-ms"


def _score_response(output: Any, elapsed_ms: float) -> Response:
    if isinstance(output, Response):  # an AMLResponse or any Flask response is sent as is
        if output.status_code >= 500:
            output.headers[RUN_FAILED_HEADER] = "True"
        response = output
    else:
        # json.dumps may raise (e.g. a numpy array): the blueprint's Exception
        # handler answers 500 "internal error", x-ms-run-function-failed False.
        response = AMLResponse(output, 200, json_str=True)
    # Three decimals, never exponent notation ("0.012", not "1.2e-2").
    response.headers.add(EXEC_TIME_HEADER, f"{elapsed_ms:.3f}")
    return response


def scoring_blueprint(
    script: UserScript, swagger: SwaggerDocuments, config: ServerConfig, telemetry: AppInsightsClient | None = None
) -> Blueprint:
    """A new blueprint serving ``script``; one per app, so apps never share state.

    ``telemetry`` (App Insights) hears of each run() that raises or times out.

    Example::

        app.register_blueprint(scoring_blueprint(script, swagger, config))
    """
    blueprint = Blueprint("aml_scoring", __name__)

    @blueprint.before_request
    def _assign_request_ids() -> Response | None:
        ids, rejection = read_request_ids(request)
        g.aml_request_ids = ids
        return rejection

    @blueprint.after_request
    def _echo_request_ids(response: Response) -> Response:
        ids: RequestIds = g.get("aml_request_ids", RequestIds())
        return add_request_id_headers(response, ids, request, config.server_version)

    def _report(error: BaseException) -> None:
        if telemetry is not None:
            ids: RequestIds = g.get("aml_request_ids", RequestIds())
            telemetry.report_exception(error, ids.request_id, ids.client_request_id)

    @blueprint.route("/", methods=["GET"])
    def health() -> str:
        return HEALTHY

    @blueprint.route("/swagger.json", methods=["GET"])
    def swagger_json() -> Response:
        try:
            document = swagger.get(request.args.get("version", "2"))
        except SwaggerVersionError as ex:
            return error_response(404, ex.message)
        return AMLResponse(document, 200, json_str=True)

    @blueprint.route("/score", methods=["GET", "POST", "OPTIONS"], provide_automatic_options=False)
    def score() -> Response:
        try:
            result = script.invoke_run(request, config.scoring_timeout_ms)
        except BadInput as ex:
            return error_response(400, ex.args[0])
        except UnsupportedInput as ex:
            return error_response(415, ex.args[0])
        except UnsupportedMethod:
            if request.method == "OPTIONS":
                return AMLResponse("", 200)
            return error_response(405, METHOD_NOT_ALLOWED)
        except ScoringTimeout as ex:
            logger.error("run() did not finish within %d ms", ex.timeout_ms)
            _report(ex)
            return error_response(500, str(ex), run_function_failed=True)
        except RunFunctionError as ex:
            logger.exception("User's run function failed")
            _report(ex.__cause__ or ex)
            return error_response(500, RUN_ERROR, run_function_failed=True)
        return _score_response(result.output, result.elapsed_ms)

    @blueprint.errorhandler(HTTPException)
    def _http_error(ex: HTTPException) -> Response:
        return error_response(ex.code or 500, ex.description or ex.name)

    @blueprint.errorhandler(Exception)
    def _unexpected_error(ex: Exception) -> Response:
        logger.exception("Unexpected error while answering %s %s", request.method, request.path)
        return error_response(500, INTERNAL_ERROR)

    return blueprint


def register_http_error_handler(app: Flask) -> None:
    """Answer routing errors (404 unknown path, 405 wrong method) with ``{"message": ...}``."""

    @app.errorhandler(HTTPException)
    def _routing_error(ex: HTTPException) -> Response:
        return error_response(ex.code or 500, ex.description or ex.name)
