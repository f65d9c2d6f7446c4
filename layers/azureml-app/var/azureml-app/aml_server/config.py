"""ServerConfig: every setting the scoring app reads, taken from the environment once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

__all__ = ["ServerConfig", "DEFAULT_APP_ROOT", "DEFAULT_ENTRY_SCRIPT", "DEFAULT_SCORING_TIMEOUT_MS"]

DEFAULT_APP_ROOT = "/var/azureml-app"
DEFAULT_ENTRY_SCRIPT = "score.py"
# One hour, as azureml-inference-server-http: a run() is bounded by the gunicorn
# worker timeout (WORKER_TIMEOUT) long before this in practice.
DEFAULT_SCORING_TIMEOUT_MS = 3600 * 1000


class ConfigError(ValueError):
    """An environment variable has a value the server cannot use."""


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

    @property
    def entry_script_path(self) -> str:
        """Absolute path of the user's scoring script."""
        return os.path.join(self.app_root, self.entry_script.replace("/", os.sep))

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "ServerConfig":
        """Read the settings the Azure ML image documents.

        Raises:
            ConfigError: SCORING_TIMEOUT_MS is not a positive integer.
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
        )
