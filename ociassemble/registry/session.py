"""One push as a job runs it: opened once before the build, finished once with the image.

``open_push`` makes, from the run's settings, everything a push needs before anything is
built or read: the registry options with the explicit credentials bound to the destination
(refused before any work when they would serve several registries), the registry layer
cache the settings ask for, and, for a push that builds (unless turned off), the
speculative uploader that sends the build's new layers to the first destination as they
are hashed (``speculative``). The build takes ``options``, ``layer_cache`` and ``uploader``
from the session. ``PushSession.finish`` is the push proper: ``push.push_image``, told which
blobs the uploader made present already, then the uploader closed; ``close`` is for a push
that stops before it::

    session = open_push(settings.registry, refs, cache, secrets=settings.secrets,
                        layer_cache=settings.layer_cache, speculative=True)
    try:
        built = build_images(settings, cache, registry_options=session.options,
                             layer_cache=session.layer_cache, uploader=session.uploader)
    except BaseException:
        session.close()
        raise
    result = session.finish(built.target, cache)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..image.cache import BlobCache
from ..image.imageindex import Target
from ..image.oci import Descriptor
from ..redact import Secrets
from .client import RegistryClient, RegistryOptions
from .options import LayerCacheChoice, RegistryAccess, layer_cache_for, options_for
from .push import push_image
from .pushresult import PushResult
from .reference import parse_reference

if TYPE_CHECKING:
    from .layercache import RegistryLayerCache
    from .speculative import SpeculativeUploader

__all__ = ["PushSession", "open_push"]


@dataclass
class PushSession:
    """What a push holds between its opening and its end (module docs): the destination
    ``refs``, the ``options`` every registry operation of the job uses, the ``layer_cache``
    (None: off) and the speculative ``uploader`` (None: off, or a push of an image read)."""

    refs: tuple[str, ...]
    options: RegistryOptions
    layer_cache: RegistryLayerCache | None = None
    uploader: SpeculativeUploader | None = None

    def finish(self, target: Target, cache: BlobCache, *,
               on_bytes: Callable[[Descriptor, int], None] | None = None) -> PushResult:
        """Push ``target`` to ``refs`` (``push.push_image``: its order, its errors), the blobs the
        uploader committed not asked about again; the uploader is closed either way."""
        try:
            up = self.uploader
            committed = (up.client.registry, up.repo, up.outcomes()) if up is not None else None
            clients = {up.client.registry: up.client} if up is not None else None  # one session per registry
            return push_image(target, cache, self.refs, options=self.options, on_bytes=on_bytes, committed=committed,
                              clients=clients)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the uploader's work and close its connections (a push that ends before ``finish``)."""
        if self.uploader is not None:
            self.uploader.close()


def open_push(access: RegistryAccess, refs: Sequence[str], cache: BlobCache, *, secrets: Secrets | None = None,
              layer_cache: LayerCacheChoice | None = None, speculative: bool = False,
              on_wait: Callable[[str, float], None] | None = None) -> PushSession:
    """The session of a push to ``refs`` (module docs): ``access`` and ``secrets`` make its options
    (``options.options_for``), ``layer_cache`` names the registry layer cache (None: none, as for a
    push of an image read), ``speculative`` opens the uploader to ``refs[0]``, ``on_wait(registry,
    seconds)`` is told when a registry asks to slow down (from upload threads).

    Raises UsageError for credentials that would serve several registries or a bad layer cache
    choice, ImageReferenceError for a bad reference; nothing is sent yet.
    """
    options = replace(options_for(access, *refs, secrets=secrets), on_wait=on_wait)
    lc = layer_cache_for(layer_cache, cache, options, pushing=True) if layer_cache is not None else None
    uploader = None
    if speculative:
        from .speculative import SpeculativeUploader

        first = parse_reference(refs[0])
        uploader = SpeculativeUploader(RegistryClient(first.registry, options), first.repository, options)
    return PushSession(tuple(refs), options, lc, uploader)
