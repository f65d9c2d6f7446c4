"""Fixtures for the integration tests; the registry ones live in registry_fixtures.py."""

from registry_fixtures import (  # noqa: F401  (fixtures are found by name)
    _isolated_docker_config,
    cache,
    make_image,
    options,
    plain_registry,
    proxy,
    pushed,
    tls_registry,
    token_registry,
)
