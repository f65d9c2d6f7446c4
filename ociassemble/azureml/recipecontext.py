"""What every step of one scoring-image build shares (``RecipeContext``), and what a step makes (``MadeLayer``).

The recipe (``azureml.recipe``) is a row of steps; each takes this one frozen value instead
of a long list of arguments, and returns the layers it made, in image order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..image.cache import BlobCache
from ..image.compress import Compression
from ..image.layer import BuiltLayer, LayerSource, build_layer
from .project import Project

if TYPE_CHECKING:
    from ..registry.layercache import RegistryLayerCache

__all__ = ["MadeLayer", "RecipeContext"]


@dataclass(frozen=True)
class MadeLayer:
    """One layer of the image above the base: what it is (``kind``, as results and ``--json`` name
    it), the layer, and its history line."""

    kind: str
    layer: BuiltLayer
    created_by: str


@dataclass(frozen=True)
class RecipeContext:
    """The settings every layer of one build is made with (the same for each step)."""

    project: Project
    cache: BlobCache
    compression: Compression
    #: every layer's file times and the image's created time (``SOURCE_DATE_EPOCH``)
    epoch: int
    log: Callable[[str], None]
    #: told every byte a layer reads (progress display)
    on_bytes: Callable[[int], None] | None = None
    #: asked for layers before any is made, and told what this build made
    layer_cache: RegistryLayerCache | None = None
    #: log pex's whole output when it fails
    debug: bool = False

    def build(self, kind: str, sources: list[LayerSource], created_by: str, **kw: Any) -> MadeLayer:
        """The layer of ``sources`` (``image.layer.build_layer``'s keywords in ``kw``), logged as ``layer KIND``."""
        self.log(f"layer {kind}")
        layer = build_layer(self.cache, sources, compression=self.compression, epoch=self.epoch,
                            on_bytes=self.on_bytes, remote=self.layer_cache, **kw)
        return MadeLayer(kind, layer, created_by)
