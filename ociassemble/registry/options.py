"""The registry package's view of a run's settings: the ``RegistryOptions`` for the registries it
names, and the registry layer cache it asks for.

The settings (``settings.Settings``, above this package) say how to reach registries and
which cache repository to use, as plain values; they know nothing of ``RegistryOptions``
or ``RegistryLayerCache``. These two functions make those from them, here, once per job::

    options = options_for(settings.registry, *refs, secrets=settings.secrets)
    layer_cache = layer_cache_for(settings.layer_cache, cache, options, pushing=True)

Anything with the fields of ``RegistryAccess`` (``settingparts.RegistrySettings``) and of
``LayerCacheChoice`` (``settingparts.LayerCacheSettings``) will do.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..image.cache import BlobCache
from ..redact import Secrets
from ..transport.spec import is_registry, parse_spec
from .client import RegistryOptions
from .credentials import CredentialFiles
from .reference import parse_reference

if TYPE_CHECKING:
    from .layercache import RegistryLayerCache

__all__ = ["LayerCacheChoice", "RegistryAccess", "layer_cache_for", "options_for"]


class RegistryAccess(Protocol):
    """How to reach registries: explicit credentials (else the stored ones: ``auth_file``, then the
    config.json in ``docker_config``), TLS, plain-HTTP hosts."""

    @property
    def username(self) -> str | None: ...

    @property
    def password(self) -> str | None: ...

    @property
    def ca_cert(self) -> Path | None: ...

    @property
    def insecure_registries(self) -> tuple[str, ...]: ...

    @property
    def auth_file(self) -> Path | None: ...

    @property
    def docker_config(self) -> Path | None: ...


class LayerCacheChoice(Protocol):
    """Which registry layer cache a run asks for (docs/registry-cache.md): one repository, or none.
    ``$OCIASSEMBLE_CACHE_REPO`` was read into the settings already: nothing here reads the environment."""

    @property
    def repo(self) -> str | None:
        """Read, and written after a push (``--cache-repo``)."""

    @property
    def read_from(self) -> str | None:
        """Only read (``--cache-from``)."""

    @property
    def write_to(self) -> str | None:
        """Only written, after a push (``--cache-to``)."""

    @property
    def off(self) -> bool:
        """No layer cache, whatever else says one (``--no-cache-repo``)."""


def options_for(access: RegistryAccess, *targets: str | None, secrets: Secrets | None = None) -> RegistryOptions:
    """``RegistryOptions`` of ``access``, the explicit credentials bound to the registry of ``targets``
    (image specs or references; those not in a registry are left out). ``secrets`` collects every
    credential sent, so that output can be cleaned of them. Raises UsageError when explicit
    credentials would have to serve several registries."""
    opts = RegistryOptions(username=access.username, password=access.password, ca_cert=access.ca_cert,
                           insecure_registries=access.insecure_registries,
                           secrets=secrets if secrets is not None else Secrets(),
                           credential_files=CredentialFiles(access.auth_file, access.docker_config))
    registries = [parse_reference(parse_spec(t).tag or "").registry for t in targets if t and is_registry(t)]
    return opts.scoped_to(registries)


def layer_cache_for(choice: LayerCacheChoice, cache: BlobCache, options: RegistryOptions, *,
                    pushing: bool) -> RegistryLayerCache | None:
    """The registry layer cache ``choice`` names (``layercache.layer_cache_from``), or None (the default: off).
    Written to only when ``pushing``."""
    from .layercache import layer_cache_from

    return layer_cache_from(cache, repo=choice.repo, read_from=choice.read_from, write_to=choice.write_to,
                            pushing=pushing, off=choice.off, options=options)
