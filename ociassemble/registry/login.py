"""``ociassemble login``: check credentials against a registry, then store them as docker does.

Apart from ``credentials`` (where credentials come from and go to) because it needs a
whole ``RegistryClient`` to ask the registry, and the client needs ``credentials``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from ..errors import UsageError
from .client import RegistryClient, RegistryOptions
from .credentials import Credentials, store_credentials
from .reference import parse_reference

__all__ = ["login"]

log = logging.getLogger("ociassemble.registry")


def login(registry: str, username: str, password: str, *, options: RegistryOptions | None = None) -> Path:
    """``ociassemble login``: check the credentials against the registry, then store them.

    ``registry`` is a host[:port] or any image reference on it. The registry is asked
    for ``/v2/`` with these credentials (through its token server for Bearer), so a
    wrong password is reported here, not at the next push. Returns the config file
    written (``options.docker_config``, else the first of ``options.credential_files``: the
    auth file, else docker's config.json; ``registry.credentials.docker_config_path``).

    Raises AuthError for refused credentials, RegistryError if the registry cannot
    be reached, UsageError for an empty username or password.
    """
    if not username or not password:
        raise UsageError("login needs a username and a password (--username and --password-stdin)")
    host = registry
    if "/" in registry or "@" in registry:
        host = parse_reference(registry).registry
    base = options if options is not None else RegistryOptions()
    opts = replace(base, username=username, password=password, credentials_registry=host)
    client = RegistryClient(host, opts)
    try:
        client.request("GET", "/v2/", scopes=(), what="logging in").close()
        if client.auth.challenge is None:
            log.warning("registry %s asked for no credentials; storing them anyway", host)
    finally:
        client.close()
    return store_credentials(host, Credentials(username, password, False, "login"), base.docker_config,
                             base.credential_files)
