"""CORS for browser clients (AML_CORS_ORIGINS), done by flask-cors exactly as the reference server does it.

The reference calls ``flask_cors.CORS(blueprint, methods=["GET", "POST"],
origins=[...])`` on its scoring blueprint, so the same library with the same
arguments gives the same headers: ``Access-Control-Allow-Origin`` echoing an
allowed ``Origin`` (none for any other origin), ``Vary: Origin``, and on a
preflight (``OPTIONS`` with ``Access-Control-Request-Method``) the allowed
methods and the requested headers.  Only the blueprint's routes get them: an
unknown path's 404 has none, as in the reference.
"""

from __future__ import annotations

import logging

from flask import Blueprint

__all__ = ["enable_cors", "parse_origins", "CORS_METHODS"]

logger = logging.getLogger("aml_server.cors")

CORS_METHODS = ["GET", "POST"]


def parse_origins(text: str) -> list[str]:
    """AML_CORS_ORIGINS as the reference splits it: on commas, each part stripped."""
    return [origin.strip() for origin in text.split(",")]


def enable_cors(blueprint: Blueprint, origins_text: str) -> bool:
    """Allow the origins of ``origins_text`` on ``blueprint``'s routes; False (and one log line) without flask-cors."""
    try:
        import flask_cors
    except ImportError:
        logger.warning(
            "AML_CORS_ORIGINS is set but CORS cannot be enabled: the flask-cors package is not installed"
            " (the image's own requirements include it: a user pin must not exclude it)"
        )
        return False
    origins = parse_origins(origins_text)
    flask_cors.CORS(blueprint, methods=CORS_METHODS, origins=origins)
    logger.info("Enabling CORS for the following origins: %s", ", ".join(origins))
    return True
