"""create_app: the scoring app's factory (load score.py, call init(), serve the Azure ML routes).

``python3 create_app.py`` serves the app with Flask's own server on
0.0.0.0:9090, for debugging inside a container; the image serves it with
gunicorn through ``wsgi.py`` (the SCORING_TIMEOUT_MS deadline holds only there).
"""

from __future__ import annotations

import logging
import sys

from flask import Flask

from aml_server.config import ServerConfig
from aml_server.errors import StartupError
from aml_server.logs import STARTUP_FAILURE_EXIT_CODE, configure_logging, log_startup_failure
from aml_server.routes import register_http_error_handler, scoring_blueprint
from aml_server.swagger import SwaggerDocuments
from aml_server.user_script import load_user_script

__all__ = ["create_app"]

logger = logging.getLogger("aml_server")

DEBUG_HOST = "0.0.0.0"  # inside a container: reachable through a published port
DEBUG_PORT = 9090  # gunicorn's port, so nginx in front works unchanged


def create_app(config: ServerConfig | None = None) -> Flask:
    """Build the scoring app for ``config`` (default: read from the environment).

    Loads the entry script, calls its init() once, prepares the swagger
    documents, and registers the routes. Called once per gunicorn worker.

    Example::

        app = create_app(ServerConfig(app_root=str(tmp_path), entry_script="score.py"))
        assert app.test_client().get("/").data == b"Healthy"

    Raises:
        ScriptLoadError: score.py is missing, fails to import, or lacks init()/run().
        ScriptInitError: init() raised.
    """
    config = config or ServerConfig.from_environ()
    script = load_user_script(config.entry_script_path, config.app_root)
    script.invoke_init()
    swagger = SwaggerDocuments.build(script.run, config)

    app = Flask(__name__)
    app.register_blueprint(scoring_blueprint(script, swagger, config))
    register_http_error_handler(app)
    logger.info("Scoring timeout is set to %d ms", config.scoring_timeout_ms)
    return app


def create_app_or_exit(config: ServerConfig | None = None) -> Flask:
    """create_app for an entry point: a startup failure is logged in one line and ends the process.

    Exits with gunicorn's boot-error code so gunicorn stops rather than respawns.
    """
    config = config or ServerConfig.from_environ()
    try:
        return create_app(config)
    except StartupError as error:
        log_startup_failure(error, config.model_dir, logger)
        sys.exit(STARTUP_FAILURE_EXIT_CODE)


if __name__ == "__main__":
    configure_logging()
    create_app_or_exit().run(host=DEBUG_HOST, port=DEBUG_PORT)
