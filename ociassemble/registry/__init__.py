"""Talking to OCI registries: push from the blob cache, pull lazily, log in.

Public surface (the CLI's ``push``, ``pull`` and ``login`` call these)::

    push_image(image_or_index, cache, refs, *, options=None) -> PushResult
    open_push(settings.registry, refs, cache, ...) -> PushSession (options, layer cache, uploader; finish(image))
    pull_image(ref, cache, *, options=None, platform=None) -> Image (platform="all": ImageIndex)
    pull_to_layout(ref, cache, dest, *, tag=None, options=None, platform=None) -> Image | ImageIndex
    login(registry, username, password, *, options=None) -> Path

``RegistryOptions`` carries credentials, TLS settings, the retry policy and the
upload concurrency for all of them; ``options_for(settings.registry, *targets)`` makes them from
a run's settings. Nothing from ``requests`` escapes this package:
failures are ``RegistryError`` (with ``status``, ``codes``, ``digest``) or ``AuthError``.

The modules, each importing only those before it: ``reference`` (names), ``retry``
(retrying an operation, the shared waits), ``http`` (one session per registry),
``credentials`` (docker's config and helpers), ``auth`` (the Authorization header,
tokens fetched through ``http``), ``client`` (the distribution API), ``upload`` (a
blob upload's requests), ``blobpush`` (every blob of a list made present in one
repository), then ``push``, ``pull``, ``login``, ``sbom`` (the SBOM
artifact), ``layercache``, ``options`` (options and layer cache from a run's settings) and
``session`` (one push: opened before the build, finished with the image).
"""

from ..errors import TransientRegistryError
from .client import RegistryOptions
from .credentials import Credentials
from .login import login
from .options import options_for
from .pull import pull_image, pull_to_layout
from .push import PushResult, push_image
from .retry import DEFAULT_RETRY, FAST_RETRY, RetryPolicy
from .session import PushSession, open_push

__all__ = [
    "DEFAULT_RETRY",
    "FAST_RETRY",
    "Credentials",
    "PushResult",
    "PushSession",
    "RegistryOptions",
    "RetryPolicy",
    "TransientRegistryError",
    "login",
    "open_push",
    "options_for",
    "pull_image",
    "pull_to_layout",
    "push_image",
]
