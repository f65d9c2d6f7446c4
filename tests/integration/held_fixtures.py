"""An image whose one layer is a model folder held by reference (uncompressed, ``none``):
what the by-reference push tests and the reflink output tests both build on."""

from __future__ import annotations

from pathlib import Path

from ociassemble.image.assemble import Image, ImageBuilder
from ociassemble.image.cache import BlobCache
from ociassemble.image.compress import Compression
from ociassemble.image.layer import LayerSource, build_layer


def held_model_image(cache: BlobCache, model_dir: Path) -> Image:
    """``model_dir`` as /var/models/m/1, the layer stored uncompressed (so held by reference)."""
    b = ImageBuilder(cache, None)
    b.add_layer(build_layer(cache, [LayerSource(model_dir, "/var/models/m/1")], compression=Compression("none"),
                            epoch=0), "model")
    return b.build(0)
