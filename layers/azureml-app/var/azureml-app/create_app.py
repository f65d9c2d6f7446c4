"""create_app: the scoring app's factory (load score.py, call init(), serve the Azure ML routes).

``python3 create_app.py`` serves the app with Flask's own server on
0.0.0.0:9090, for debugging inside a container; the image serves it with
gunicorn through ``wsgi.py`` (the SCORING_TIMEOUT_MS deadline holds only there).
"""

from __future__ import annotations

import logging
import sys

from flask import Flask

from aml_server.appinsights import connect_app_insights
from aml_server.config import ConfigError, ServerConfig
from aml_server.cors import enable_cors
from aml_server.errors import ScriptInitError, StartupError
from aml_server.logs import STARTUP_FAILURE_EXIT_CODE, configure_logging, log_startup_failure
from aml_server.print_log import install_print_logger
from aml_server.routes import register_http_error_handler, scoring_blueprint
from aml_server.swagger import SwaggerDocuments
from aml_server.user_script import load_user_script

__all__ = ["create_app", "create_app_or_exit", "APP_INSIGHTS_EXTENSION"]

logger = logging.getLogger("aml_server")

DEBUG_HOST = "0.0.0.0"  # inside a container: reachable through a published port
DEBUG_PORT = 9090  # gunicorn's port, so nginx in front works unchanged
# app.extensions key of the App Insights client (None when telemetry is off).
APP_INSIGHTS_EXTENSION = "aml_appinsights"


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
    telemetry = connect_app_insights(config)
    script = load_user_script(config.entry_script_path, config.app_root, source_dir=config.source_dir_path)
    try:
        script.invoke_init()
    except ScriptInitError as ex:
        if telemetry is not None:  # as the reference: the failure reaches App Insights before the worker exits
            telemetry.report_exception(ex.__cause__ or ex)
            telemetry.close()
        raise
    swagger = SwaggerDocuments.build(script.run, config)

    app = Flask(__name__)
    blueprint = scoring_blueprint(script, swagger, config, telemetry)
    if telemetry is not None:
        telemetry.attach(blueprint)
    if config.cors_origins:
        enable_cors(blueprint, config.cors_origins)
    app.register_blueprint(blueprint)
    register_http_error_handler(app)
    app.extensions[APP_INSIGHTS_EXTENSION] = telemetry
    logger.info("Scoring timeout is set to %d ms", config.scoring_timeout_ms)
    return app


def create_app_or_exit(config: ServerConfig | None = None) -> Flask:
    """create_app for an entry point: a startup failure is logged in one line and ends the process.

    Exits with gunicorn's boot-error code so gunicorn stops rather than respawns.
    A setting the server cannot use (SCORING_TIMEOUT_MS=abc) is one line too.
    """
    if config is None:
        try:
            config = ServerConfig.from_environ()
        except ConfigError as error:
            logger.error("Configuration error: %s", error)
            sys.exit(STARTUP_FAILURE_EXIT_CODE)
    try:
        return create_app(config)
    except StartupError as error:
        log_startup_failure(error, config.model_dir, logger)
        sys.exit(STARTUP_FAILURE_EXIT_CODE)


if __name__ == "__main__":
    configure_logging()
    install_print_logger()
    create_app_or_exit().run(host=DEBUG_HOST, port=DEBUG_PORT)
