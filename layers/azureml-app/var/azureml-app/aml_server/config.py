"""ServerConfig: every setting the scoring app reads, taken from the environment once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

__all__ = ["ServerConfig", "ConfigError", "DEFAULT_APP_ROOT", "DEFAULT_ENTRY_SCRIPT", "DEFAULT_SCORING_TIMEOUT_MS",
           "parse_bool"]

DEFAULT_APP_ROOT = "/var/azureml-app"
DEFAULT_ENTRY_SCRIPT = "score.py"
# One hour, as azureml-inference-server-http: a run() is bounded by the gunicorn
# worker timeout (WORKER_TIMEOUT) long before this in practice.
DEFAULT_SCORING_TIMEOUT_MS = 3600 * 1000


# The words pydantic (the reference's settings library) reads as booleans, any case.
_TRUE_WORDS = ("1", "on", "t", "true", "y", "yes")
_FALSE_WORDS = ("0", "off", "f", "false", "n", "no")


class ConfigError(ValueError):
    """An environment variable has a value the server cannot use."""


def parse_bool(name: str, raw: str | None, default: bool) -> bool:
    """An on/off variable read as the reference reads it (``true``/``false``, ``1``/``0``, ``yes``/``no``...).

    Raises:
        ConfigError: any other word (the reference refuses to start on it too).
    """
    if raw is None or raw.strip() == "":
        return default
    word = raw.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


@dataclass(frozen=True)
class ServerConfig:
    """What one scoring app needs to know; immutable so tests can build many side by side.

    Example::

        config = ServerConfig(app_root="/tmp/app", entry_script="src/score.py")
        app = create_app(config)
    """

    app_root: str = DEFAULT_APP_ROOT
    entry_script: str = DEFAULT_ENTRY_SCRIPT
    scoring_timeout_ms: int = DEFAULT_SCORING_TIMEOUT_MS
    model_dir: str = ""
    # Used only to fill in the generated swagger documents.
    service_name: str = "ML service"
    service_version: str = "1.0"
    service_path_prefix: str = ""
    # Sent back as ``x-ms-server-version`` when set (the reference's CLI sets it).
    server_version: str = ""
    # The source folder under the app root (AZUREML_SOURCE_DIRECTORY): appended to
    # sys.path, so an entry script nested in it imports packages at its root.
    source_dir: str = ""
    # AML_CORS_ORIGINS as given: comma-separated origins allowed to call the routes
    # from a browser (empty: no CORS headers at all).
    cors_origins: str = ""
    # App Insights telemetry (aml_server.appinsights): on only with a key.
    app_insights_enabled: bool = False
    # An instrumentation key, or a whole connection string (InstrumentationKey=...;IngestionEndpoint=...).
    app_insights_key: str = ""
    # APPLICATIONINSIGHTS_CONNECTION_STRING: where the exporter of the reference takes
    # the ingestion endpoint from when the key is a bare instrumentation key.
    app_insights_connection_string: str = ""
    # APP_INSIGHTS_LOG_RESPONSE_ENABLED: send each answer's body with its request item.
    app_insights_log_response: bool = True
    # Reported with every telemetry item, as the reference does.
    workspace_name: str = ""
    hostname: str = "Unknown"

    @property
    def source_dir_path(self) -> str:
        """Absolute path of the source folder ("" when AZUREML_SOURCE_DIRECTORY is not set)."""
        if not self.source_dir:
            return ""
        return os.path.join(self.app_root, self.source_dir)

    @property
    def entry_script_path(self) -> str:
        """Absolute path of the user's scoring script."""
        return os.path.join(self.app_root, self.entry_script.replace("/", os.sep))

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "ServerConfig":
        """Read the settings the Azure ML image documents.

        Raises:
            ConfigError: SCORING_TIMEOUT_MS is not a positive integer, or an on/off
                variable (AML_APP_INSIGHTS_ENABLED, APP_INSIGHTS_LOG_RESPONSE_ENABLED) is neither.
        """
        env = os.environ if environ is None else environ
        raw_timeout = env.get("SCORING_TIMEOUT_MS", str(DEFAULT_SCORING_TIMEOUT_MS))
        try:
            timeout_ms = int(raw_timeout)
        except ValueError:
            raise ConfigError(
                f"SCORING_TIMEOUT_MS must be an integer number of milliseconds, not {raw_timeout!r}"
            ) from None
        if timeout_ms <= 0:
            raise ConfigError(f"SCORING_TIMEOUT_MS must be positive, not {timeout_ms}")
        return cls(
            app_root=env.get("AML_APP_ROOT", DEFAULT_APP_ROOT),
            entry_script=env.get("AZUREML_ENTRY_SCRIPT") or DEFAULT_ENTRY_SCRIPT,
            scoring_timeout_ms=timeout_ms,
            model_dir=env.get("AZUREML_MODEL_DIR", ""),
            service_name=env.get("SERVICE_NAME", "ML service"),
            service_version=env.get("SERVICE_VERSION", "1.0"),
            service_path_prefix=env.get("SERVICE_PATH_PREFIX", ""),
            server_version=env.get("HTTP_X_MS_SERVER_VERSION", ""),
            source_dir=env.get("AZUREML_SOURCE_DIRECTORY", ""),
            cors_origins=env.get("AML_CORS_ORIGINS", ""),
            app_insights_enabled=parse_bool("AML_APP_INSIGHTS_ENABLED", env.get("AML_APP_INSIGHTS_ENABLED"), False),
            app_insights_key=env.get("AML_APP_INSIGHTS_KEY", "").strip(),
            app_insights_connection_string=env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip(),
            app_insights_log_response=parse_bool(
                "APP_INSIGHTS_LOG_RESPONSE_ENABLED", env.get("APP_INSIGHTS_LOG_RESPONSE_ENABLED"), True
            ),
            workspace_name=env.get("WORKSPACE_NAME", ""),
            hostname=env.get("HOSTNAME", "Unknown"),
        )
