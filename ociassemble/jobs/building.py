"""What every building job (build, push, verify) does first: the blob cache, the registry settings, the layer cache, the build."""

from __future__ import annotations

from typing import Any

from ..build import build_images
from ..built import BuiltSet
from ..events import Progress
from ..image.cache import BlobCache
from ..settings import Settings

__all__ = ["build_set", "layer_cache"]


def layer_cache(settings: Settings, cache: BlobCache, options: Any, *, pushing: bool) -> Any:
    """The registry layer cache the settings ask for (``registry.layercache``), or None (the default: off)."""
    from ..registry.layercache import layer_cache_from

    lc = settings.layer_cache
    return layer_cache_from(cache, repo=lc.repo, read_from=lc.read_from, write_to=lc.write_to, pushing=pushing,
                            off=lc.off, options=options, environ={})


def build_set(settings: Settings, cache: BlobCache, options: Any, progress: Progress, *,
              pushing: bool = False) -> BuiltSet:
    """The image the settings describe (recipe or plain), for each of its platforms. ``options``:
    the registry settings (a registry base, the layer cache), made once by the job."""
    return build_images(settings, cache, registry_options=options,
                        layer_cache=layer_cache(settings, cache, options, pushing=pushing), progress=progress)
