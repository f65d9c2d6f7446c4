"""App Insights telemetry (AML_APP_INSIGHTS_ENABLED, AML_APP_INSIGHTS_KEY): the items the reference server sends.

azureml-inference-server-http 1.5.1 sends, through OpenTelemetry's Azure Monitor
exporter, three kinds of item; this module builds the same envelopes (the same
names, base types, tags and custom properties) and hands them to a
TelemetryChannel:

* a **Request** for every answer of a route other than ``GET /`` (the health
  probe): its custom properties are the reference's ("Request Id", "Client
  Request Id", "Response Value", "resultCode", "success", "duration", ...);
* an **Exception** when run() raises or overruns SCORING_TIMEOUT_MS, and when
  init() fails (sent before the worker exits);
* a **Message** (a trace) for every print() line of score.py (see print_log).

Where this differs from the reference, on purpose (tests/app name each):

1. A Request's own ``responseCode``, ``success`` and ``duration`` are the real
   ones; the reference's span carries no HTTP attributes, so its exporter sends
   "0", true and zero for every request (its custom properties, which we send
   the same, have the right values).
2. An Exception names the user's exception (``ValueError: ...``) and its
   traceback; the reference names its own wrapper (UserScriptException) and
   sends the repr of ``sys.exc_info()`` as the message.
3. Items sent while answering a request (its prints and exception) carry that
   request's operation id, so the portal shows them with it; the reference
   sends zeros there.  Prints also get a "Request Id" property.
4. No ``_OTELRESOURCE_`` metric (an exporter artefact describing the process).

The key is an instrumentation key (as Azure ML sets it) or a whole connection
string; the ingestion endpoint is the connection string's ``IngestionEndpoint``,
else APPLICATIONINSIGHTS_CONNECTION_STRING's (as the exporter reads it), else
the global one.
"""

from __future__ import annotations

import datetime
import json
import locale
import logging
import os
import platform
import re
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Request, Response, g, has_request_context, request

from .config import ServerConfig
from .print_log import PRINT_LOGGER, REQUEST_ID_ATTRIBUTE, TEXT_ATTRIBUTE
from .telemetry_channel import TelemetryChannel

__all__ = ["AppInsightsTarget", "AppInsightsClient", "TargetError", "connect_app_insights", "DEFAULT_INGESTION"]

logger = logging.getLogger("aml_server.appinsights")

DEFAULT_INGESTION = "https://dc.services.visualstudio.com"
TRACK_PATH = "/v2.1/track"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ZERO_OPERATION = "0" * 32
_ZERO_PARENT = "0" * 16
SDK_VERSION = f"py{platform.python_version()}:aml_server"
HEALTH_PATH = "/"
NOT_SERIALIZABLE = "Scoring request response payload is a non serializable object or raw binary"


class TargetError(ValueError):
    """The key or connection string cannot be used; the message says which part and why."""


def _parse_connection_string(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise TargetError(f"connection string part {part!r} is not NAME=VALUE")
        fields[name.strip().lower()] = value.strip()
    return fields


@dataclass(frozen=True)
class AppInsightsTarget:
    """Where items go: the instrumentation key they carry and the URL they are POSTed to."""

    instrumentation_key: str
    ingestion_endpoint: str

    @property
    def track_url(self) -> str:
        return self.ingestion_endpoint.rstrip("/") + TRACK_PATH

    @classmethod
    def parse(cls, key: str, env_connection_string: str = "") -> "AppInsightsTarget":
        """From AML_APP_INSIGHTS_KEY (a key or a connection string) and APPLICATIONINSIGHTS_CONNECTION_STRING.

        Raises:
            TargetError: no key, a key that is not a UUID, or a malformed connection string.
        """
        own = _parse_connection_string(key) if "=" in key else {"instrumentationkey": key}
        env = _parse_connection_string(env_connection_string) if env_connection_string else {}
        ikey = own.get("instrumentationkey") or env.get("instrumentationkey") or ""
        if not ikey:
            raise TargetError("AML_APP_INSIGHTS_KEY has no instrumentation key")
        if not _UUID.match(ikey):
            raise TargetError("the instrumentation key is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")
        endpoint = own.get("ingestionendpoint") or env.get("ingestionendpoint") or DEFAULT_INGESTION
        if not endpoint.startswith(("https://", "http://")):
            raise TargetError(f"IngestionEndpoint {endpoint!r} is not an http(s) URL")
        return cls(instrumentation_key=ikey, ingestion_endpoint=endpoint)


def _iso(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _ai_duration(duration_ms: float) -> str:
    """The envelope's own duration: ``d.hh:mm:ss.fff``."""
    total_ms = int(round(duration_ms))
    seconds, ms = divmod(total_ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}.{hours:02d}:{minutes:02d}:{seconds:02d}.{ms:03d}"


def _reference_duration(duration_ms: float) -> str:
    """The "duration" custom property as the reference formats it (``hh:mm:ss.fff``, days in front when any)."""
    remaining = duration_ms or 0
    parts = []
    for multiplier in (1000, 60, 60, 24):
        parts.append(remaining % multiplier)
        remaining //= multiplier
    parts.reverse()
    text = "%02d:%02d:%02d.%03d" % tuple(parts)
    return "%d.%s" % (remaining, text) if remaining else text


def _locale() -> str | None:
    try:
        return locale.getlocale()[0]
    except ValueError:
        return None


class AppInsightsClient:
    """Builds the reference's envelopes for one app and queues them on a channel.

    Example::

        client = AppInsightsClient(config, AppInsightsTarget.parse(key))
        client.attach(blueprint)
    """

    def __init__(self, config: ServerConfig, target: AppInsightsTarget, channel: TelemetryChannel | None = None):
        self.config = config
        self.target = target
        self.channel = channel or TelemetryChannel(target.track_url)
        node = platform.node()
        self._tags: dict[str, str] = {"ai.device.id": node}
        device_locale = _locale()
        if device_locale:
            self._tags["ai.device.locale"] = device_locale
        self._tags.update({
            "ai.device.type": "Other",
            "ai.internal.sdkVersion": SDK_VERSION,
            "ai.cloud.role": config.service_name,
            "ai.cloud.roleInstance": node,
            "ai.internal.nodeName": node,
        })
        self._print_handler: logging.Handler | None = None

    # --- envelopes ---

    def _envelope(self, name: str, moment: datetime.datetime, tags: dict[str, str], base_type: str,
                  base_data: dict[str, Any]) -> dict[str, Any]:
        return {
            "ver": 1,
            "name": f"Microsoft.ApplicationInsights.{name}",
            "time": _iso(moment),
            "sampleRate": 100.0,
            "iKey": self.target.instrumentation_key,
            "tags": {**self._tags, **tags},
            "data": {"baseType": base_type, "baseData": {"ver": 2, **base_data}},
        }

    @staticmethod
    def _operation_tags() -> dict[str, str]:
        operation = g.get("aml_operation_id") if has_request_context() else None
        return {"ai.operation.id": operation or _ZERO_OPERATION, "ai.operation.parentId": _ZERO_PARENT}

    def request_item(self, req: Request, response: Response, start: datetime.datetime, duration_ms: float,
                     request_id: str, client_request_id: str, operation_id: str) -> dict[str, Any]:
        """The Request item of one answer, with the reference's custom properties."""
        properties: dict[str, Any] = {
            "Container Id": self.config.hostname,
            "Request Id": request_id,
            "Client Request Id": client_request_id,
        }
        if self.config.app_insights_log_response:
            try:
                properties["Response Value"] = response.get_data(as_text=True)
            except (UnicodeDecodeError, AttributeError, RuntimeError):
                properties["Response Value"] = json.dumps(NOT_SERIALIZABLE)
        successful = response.status_code < 400
        properties.update({
            "name": req.path,
            "url": req.url,
            "start_time": start.isoformat() + "Z",
            "duration": _reference_duration(duration_ms),
            "resultCode": str(response.status_code),
            "success": str(successful),
            "http_method": req.method,
            "Workspace Name": self.config.workspace_name,
            "Service Name": self.config.service_name,
        })
        return self._envelope(
            "Request", start, {"ai.operation.id": operation_id, "ai.operation.name": req.path}, "RequestData",
            {
                "id": uuid.uuid4().hex[:16],
                "name": req.path,
                "duration": _ai_duration(duration_ms),
                "success": successful,
                "responseCode": str(response.status_code),
                "properties": properties,
                "measurements": {},
            },
        )

    def exception_item(self, error: BaseException, request_id: str, client_request_id: str) -> dict[str, Any]:
        """The Exception item for ``error`` (the user's exception), with the reference's custom_dimensions."""
        dimensions = {"Container Id": self.config.hostname, "Request Id": request_id,
                      "Client Request Id": client_request_id}
        stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        caller = sys._getframe(1)
        return self._envelope("Exception", _utcnow(), self._operation_tags(), "ExceptionData", {
            "exceptions": [{
                "typeName": type(error).__name__,
                "message": str(error)[:32768] or type(error).__name__,
                "hasFullStack": True,
                "stack": stack[:32768],
            }],
            "severityLevel": "3",
            "properties": {
                "custom_dimensions": repr(dimensions),
                "code.file.path": caller.f_code.co_filename,
                "code.function.name": caller.f_code.co_name,
                "code.line.number": str(caller.f_lineno),
            },
        })

    def message_item(self, record: logging.LogRecord) -> dict[str, Any]:
        """The Message (trace) item of one print() line."""
        properties = {
            "code.file.path": record.pathname,
            "code.function.name": record.funcName,
            "code.line.number": str(record.lineno),
        }
        request_id = getattr(record, REQUEST_ID_ATTRIBUTE, "")
        if request_id:
            properties["Request Id"] = request_id
        moment = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).replace(tzinfo=None)
        return self._envelope("Message", moment, self._operation_tags(), "MessageData", {
            "message": getattr(record, TEXT_ATTRIBUTE, record.getMessage()),
            "severityLevel": "1",
            "properties": properties,
        })

    # --- wiring ---

    def report_exception(self, error: BaseException, request_id: str = "Unknown", client_request_id: str = "") -> None:
        """Queue an Exception item; never raises."""
        try:
            self.channel.send(self.exception_item(error, request_id, client_request_id))
        except Exception:
            logger.exception("Could not queue an App Insights exception item")

    def listen_to_prints(self) -> None:
        """Send every print() line as a Message from now on (before score.py is imported, as the reference)."""
        if self._print_handler is None:
            self._print_handler = _PrintHandler(self)
            logging.getLogger(PRINT_LOGGER).addHandler(self._print_handler)

    def attach(self, blueprint: Blueprint) -> None:
        """Time every request of ``blueprint`` and send its Request item."""

        @blueprint.before_request
        def _start_clock() -> None:
            g.aml_start = _utcnow()
            g.aml_perf_start = time.perf_counter()
            g.aml_operation_id = uuid.uuid4().hex

        @blueprint.after_request
        def _send_request(response: Response) -> Response:
            if request.path == HEALTH_PATH:
                return response
            try:
                ids = g.get("aml_request_ids")
                duration_ms = (time.perf_counter() - g.get("aml_perf_start", time.perf_counter())) * 1000
                self.channel.send(self.request_item(
                    request, response, g.get("aml_start") or _utcnow(), duration_ms,
                    getattr(ids, "request_id", ""), getattr(ids, "client_request_id", ""),
                    g.get("aml_operation_id") or uuid.uuid4().hex,
                ))
            except Exception:
                logger.exception("Could not queue an App Insights request item")
            return response

    def close(self) -> None:
        """Stop listening to print() and send what is queued."""
        if self._print_handler is not None:
            logging.getLogger(PRINT_LOGGER).removeHandler(self._print_handler)
            self._print_handler = None
        self.channel.close()


class _PrintHandler(logging.Handler):
    """Turns each print() record into a Message item."""

    def __init__(self, client: AppInsightsClient) -> None:
        super().__init__(level=logging.INFO)
        self.client = client

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.client.channel.send(self.client.message_item(record))
        except Exception:
            self.handleError(record)


def connect_app_insights(config: ServerConfig) -> AppInsightsClient | None:
    """The client the settings ask for, or None (disabled, or unusable: logged in one line, serving goes on).

    Like the reference, a bad key never stops the server: telemetry is off and the log says why.
    """
    if not config.app_insights_enabled:
        return None
    if not config.app_insights_key:
        logger.warning("AML_APP_INSIGHTS_ENABLED is true but AML_APP_INSIGHTS_KEY is empty: App Insights is off")
        return None
    try:
        target = AppInsightsTarget.parse(config.app_insights_key, config.app_insights_connection_string)
    except TargetError as ex:
        logger.error("App Insights is off: %s (AML_APP_INSIGHTS_KEY takes an instrumentation key or a connection "
                     "string InstrumentationKey=...;IngestionEndpoint=https://...)", ex)
        return None
    logger.info("App Insights telemetry goes to %s", target.track_url)
    client = AppInsightsClient(config, target)
    client.listen_to_prints()
    return client
