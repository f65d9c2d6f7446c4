"""Request-id headers: read from the request before a route runs, echoed on its answer.

The rules are Azure ML's:

* ``x-request-id``: the client's, or a new UUID; longer than 100 characters answers 431.
* ``x-ms-client-request-id``: echoed when sent.
* ``x-ms-request-id`` (deprecated alias of the client id): echoed when sent, and
  otherwise filled from the client id or, failing that, the request id, so that
  old clients always find it.
* ``TraceId`` (Office services' tracing) is echoed when sent.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from flask import Request, Response

from .responses import AMLResponse, error_response

__all__ = ["RequestIds", "read_request_ids", "add_request_id_headers", "HEADER_LIMIT"]

logger = logging.getLogger("aml_server.request_ids")

# Azure ML's front end rejects longer ids; the server enforces the same limit.
HEADER_LIMIT = 100


@dataclass(frozen=True)
class RequestIds:
    """The ids of one request; an empty string means "do not send that header"."""

    request_id: str = ""
    client_request_id: str = ""
    legacy_client_request_id: str = ""


def read_request_ids(request: Request) -> tuple[RequestIds, AMLResponse | None]:
    """The request's ids, and the 431 answer to send instead of routing when one is too long."""
    request_id = request.headers.get("x-request-id") or str(uuid.uuid4())
    if len(request_id) > HEADER_LIMIT:
        return RequestIds(), error_response(431, f"x-request-id must not exceed {HEADER_LIMIT} characters")

    legacy = request.headers.get("x-ms-request-id", "")
    client = request.headers.get("x-ms-client-request-id", "")
    if legacy:
        logger.warning(
            "x-ms-request-id header has been deprecated and will be removed from future versions of the server."
            " Please use x-ms-client-request-id."
        )
        client = client or legacy
    else:
        legacy = client or request_id

    if len(legacy) > HEADER_LIMIT or len(client) > HEADER_LIMIT:
        return RequestIds(request_id=request_id), error_response(
            431, f"x-ms-request-id and x-ms-client-request-id must not exceed {HEADER_LIMIT} characters"
        )
    return RequestIds(request_id, client, legacy), None


def add_request_id_headers(response: Response, ids: RequestIds, request: Request, server_version: str) -> Response:
    """Set the id headers (and ``x-ms-server-version`` when configured) on ``response``."""
    if server_version:
        response.headers.add("x-ms-server-version", server_version)
    if ids.request_id:
        response.headers["x-request-id"] = ids.request_id
    if ids.legacy_client_request_id:
        response.headers["x-ms-request-id"] = ids.legacy_client_request_id
    if ids.client_request_id:
        response.headers["x-ms-client-request-id"] = ids.client_request_id
    if "TraceId" in request.headers:
        response.headers.add("TraceId", request.headers["TraceId"])
    return response
