"""Fixtures for the integration tests: the registry ones live in registry_fixtures.py, the quick
scoring-image recipe (a fake base, deps resolved once) in recipe_fixtures.py, Debian trixie's
skopeo, podman and cosign (verifiers of sigstore signatures) in trixie_tools.py."""

from recipe_fixtures import quick_recipe  # noqa: F401
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
from trixie_tools import trixie_cosign, trixie_podman, trixie_skopeo  # noqa: F401
