"""Registry settings from plain values, with the environment filling what is not given.

The CLI's registry flags call this, and so can a program: secrets need never be an
argument, since ``$OCIASSEMBLE_USERNAME`` and ``$OCIASSEMBLE_PASSWORD`` are read when
``username`` and ``password`` are not given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from ..redact import Secrets
from .client import RegistryOptions

__all__ = ["ENV_PASSWORD", "ENV_USERNAME", "registry_options"]

ENV_USERNAME = "OCIASSEMBLE_USERNAME"
ENV_PASSWORD = "OCIASSEMBLE_PASSWORD"


def registry_options(*, username: str | None = None, password: str | None = None, ca_cert: str | None = None,
                     insecure_registries: Sequence[str] = (), environ: Mapping[str, str] | None = None,
                     secrets: Secrets | None = None) -> RegistryOptions:
    """``RegistryOptions`` for these values; a missing user or password comes from ``environ``
    (default ``os.environ``), and neither means: the docker config's credentials, if any.
    ``secrets`` (default: a new set) collects the credentials sent, for cleaning output."""
    env = os.environ if environ is None else environ
    if password is None and env.get(ENV_PASSWORD):
        password = env[ENV_PASSWORD]
    return RegistryOptions(username=username or env.get(ENV_USERNAME), password=password, ca_cert=ca_cert,
                           insecure_registries=tuple(insecure_registries),
                           **({"secrets": secrets} if secrets is not None else {}))
