"""SwaggerDocuments: the /swagger.json answers (Swagger 2.0, OpenAPI 3.0 and 3.1), built once at startup.

The document shape is the reference server's: health, score and swagger
operations, with ``ServiceInput``/``ServiceOutput`` taken from inference_schema's
decorators (or ``{"type": "object", "example": {}}`` for an undecorated run()).
A ``swagger.json``/``swagger2.json``, ``swagger3.json`` or ``swagger3.1.json``
file in the app root replaces the generated document of its version.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from inference_schema.schema_util import (
    get_input_schema,
    get_output_schema,
    get_supported_versions,
    is_schema_decorated,
)

from .config import ServerConfig

__all__ = ["SwaggerDocuments", "SwaggerVersionError"]

logger = logging.getLogger("aml_server.swagger")

_HEALTH_DESCRIPTION = "If service is up and running, this response will be returned with the content 'Healthy'"
_SCORE_DESCRIPTION = "The service processed the input correctly and provided a result prediction, if applicable."
_FAILED_DESCRIPTION = "The service failed to execute due to an error."
_PAYLOAD_DESCRIPTION = "The input payload for executing the real-time machine learning service."
_BEARER = {"type": "apiKey", "name": "Authorization", "in": "header", "description": "For example: Bearer abc123"}
_UNDECORATED_SCHEMA: dict[str, Any] = {"type": "object", "example": {}}


class SwaggerVersionError(LookupError):
    """The requested ``?version=`` is unknown or not available for this script (answered 404)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _default_definitions() -> dict[str, Any]:
    return {
        "ServiceInput": {
            "type": "object",
            "properties": {"param": {"type": "object", "additionalProperties": {"type": "object"}}},
        },
        "ServiceOutput": {"type": "object", "additionalProperties": {"type": "object"}},
        "ErrorResponse": {"type": "object", "properties": {"message": {"type": "string"}}},
    }


def _info(config: ServerConfig) -> dict[str, str]:
    return {
        "title": config.service_name,
        "description": f"API specification for the Azure Machine Learning service {config.service_name}",
        "version": config.service_version,
    }


def _prefix(config: ServerConfig) -> str:
    stripped = config.service_path_prefix.strip("/")
    return f"/{stripped}" if config.service_path_prefix else ""


def _swagger2(config: ServerConfig, service_input: Any, service_output: Any) -> dict[str, Any]:
    error = {"description": _FAILED_DESCRIPTION, "schema": {"$ref": "#/definitions/ErrorResponse"}}
    prefix = _prefix(config)
    definitions = _default_definitions()
    definitions["ServiceInput"] = service_input
    definitions["ServiceOutput"] = service_output
    return {
        "swagger": "2.0",
        "info": _info(config),
        "schemes": ["https"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": {"Bearer": dict(_BEARER)},
        "paths": {
            f"{prefix}/": {
                "get": {
                    "operationId": "ServiceHealthCheck",
                    "description": "Simple health check endpoint to ensure the service is up at any given point.",
                    "responses": {
                        "200": {
                            "description": _HEALTH_DESCRIPTION,
                            "schema": {"type": "string"},
                            "examples": {"application/json": "Healthy"},
                        },
                        "default": dict(error),
                    },
                }
            },
            f"{prefix}/score": {
                "post": {
                    "operationId": "RunMLService",
                    "description": "Run web service's model and get the prediction output",
                    "security": [{"Bearer": []}],
                    "parameters": [
                        {
                            "name": "serviceInputPayload",
                            "in": "body",
                            "description": _PAYLOAD_DESCRIPTION,
                            "schema": {"$ref": "#/definitions/ServiceInput"},
                        }
                    ],
                    "responses": {
                        "200": {"description": _SCORE_DESCRIPTION, "schema": {"$ref": "#/definitions/ServiceOutput"}},
                        "default": dict(error),
                    },
                }
            },
            f"{prefix}/swagger.json": {
                "get": {
                    "operationId": "GetSwaggerSpec",
                    "description": "Get the Swagger specification.",
                    "parameters": [
                        {"name": "version", "in": "query", "required": False, "type": "integer", "enum": [2, 3]}
                    ],
                    "responses": {
                        "200": {"description": "The Swagger specification.", "schema": {"type": "string"}},
                        "default": dict(error),
                    },
                }
            },
        },
        "definitions": definitions,
    }


def _openapi3(config: ServerConfig, service_input: Any, service_output: Any, openapi: str) -> dict[str, Any]:
    def json_content(ref: str) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}

    def error() -> dict[str, Any]:
        return {"description": _FAILED_DESCRIPTION, "content": json_content("ErrorResponse")}

    prefix = _prefix(config)
    schemas = _default_definitions()
    schemas["ServiceInput"] = service_input
    schemas["ServiceOutput"] = service_output
    return {
        "openapi": openapi,
        "info": _info(config),
        "security": [{"Bearer": []}],
        "paths": {
            f"{prefix}/": {
                "get": {
                    "operationId": "ServiceHealthCheck",
                    "description": "Simple health check endpoint to ensure the service is up at any given point.",
                    "responses": {
                        "200": {
                            "description": _HEALTH_DESCRIPTION,
                            "content": {"text/plain": {"schema": {"type": "string", "example": "Healthy"}}},
                        },
                        "default": error(),
                    },
                }
            },
            f"{prefix}/score": {
                "post": {
                    "operationId": "RunMLService",
                    "description": "Run web service's model and get the prediction output",
                    "security": [{"Bearer": []}],
                    "requestBody": {"description": _PAYLOAD_DESCRIPTION, "content": json_content("ServiceInput")},
                    "responses": {
                        "200": {"description": _SCORE_DESCRIPTION, "content": json_content("ServiceOutput")},
                        "default": error(),
                    },
                }
            },
            f"{prefix}/swagger.json": {
                "get": {
                    "operationId": "GetSwaggerSpec",
                    "description": "Get the Swagger specification.",
                    "parameters": [
                        {
                            "name": "version",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "enum": [2, 3]},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The Swagger specification.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "default": error(),
                    },
                }
            },
        },
        "components": {"schemas": schemas, "securitySchemes": {"Bearer": dict(_BEARER)}},
    }


@dataclass(frozen=True)
class _Flavour:
    """One document version: its canonical name, the ``?version=`` aliases, the user file names."""

    version: str
    aliases: frozenset[str]
    user_files: tuple[str, ...]
    build: Callable[[ServerConfig, Any, Any], dict[str, Any]]


_FLAVOURS = (
    _Flavour("2", frozenset({"2", "2.0"}), ("swagger.json", "swagger2.json"), _swagger2),
    _Flavour("3", frozenset({"3", "3.0"}), ("swagger3.json",), lambda c, i, o: _openapi3(c, i, o, "3.0.3")),
    _Flavour("3.1", frozenset({"3.1"}), ("swagger3.1.json",), lambda c, i, o: _openapi3(c, i, o, "3.1.0")),
)
_VALID_VERSIONS = frozenset().union(*(f.aliases for f in _FLAVOURS))


def _read_user_document(app_root: str, names: tuple[str, ...]) -> dict[str, Any] | None:
    for name in names:
        path = os.path.join(app_root, name)
        try:
            with open(path, encoding="utf-8") as file:
                document = json.load(file)
        except FileNotFoundError:
            continue
        logger.info("Loaded the user's swagger document %s", path)
        return document
    return None


@dataclass(frozen=True)
class SwaggerDocuments:
    """The documents available for one script, keyed by every accepted ``?version=`` value."""

    by_alias: dict[str, dict[str, Any]] = field(default_factory=dict)
    supported: tuple[str, ...] = ()

    @classmethod
    def build(cls, run: Callable[..., Any], config: ServerConfig) -> "SwaggerDocuments":
        """Generate (or read) each version's document for ``run``.

        A version is skipped when the script's schema types do not support it
        (inference_schema's ``get_supported_versions``).
        """
        decorated = is_schema_decorated(run)
        if decorated:
            service_input = copy.deepcopy(get_input_schema(run))
            service_output = copy.deepcopy(get_output_schema(run))
        else:
            service_input, service_output = copy.deepcopy(_UNDECORATED_SCHEMA), copy.deepcopy(_UNDECORATED_SCHEMA)
        available = set(get_supported_versions(run))

        by_alias: dict[str, dict[str, Any]] = {}
        supported: list[str] = []
        for flavour in _FLAVOURS:
            document = _read_user_document(config.app_root, flavour.user_files)
            if document is None and flavour.aliases & available:
                document = flavour.build(config, service_input, service_output)
            if document is None:
                continue
            supported.append(flavour.version)
            by_alias.update({alias: document for alias in flavour.aliases})
        logger.info("Swagger documents prepared for versions [%s]", ", ".join(sorted(supported)))
        return cls(by_alias=by_alias, supported=tuple(sorted(supported)))

    def get(self, version: str) -> dict[str, Any]:
        """The document for ``?version=`` (``"2"`` when absent).

        Raises:
            SwaggerVersionError: the version is unknown, or not available for this script.
        """
        listed = ", ".join(self.supported)
        if version not in _VALID_VERSIONS:
            raise SwaggerVersionError(f"Swagger version [{version}] is not valid. Supported versions: [{listed}].")
        document = self.by_alias.get(version)
        if not document:
            raise SwaggerVersionError(
                f"Swagger version [{version}] is not supported for the scoring script. "
                f"Supported swagger versions: [{listed}]."
            )
        return document
