"""The Python deps layer, from the cheapest place that has it: the local cache, the registry layer cache, pex.

The ladder, for one ``deps_key`` (what decides the deps):

1. the deps folder is in the local cache: its layer is too (the local layer index, keyed by
   the folder's token, not its files' stat stamps), or it is tarred once from the folder;
2. else the registry layer cache (when on) holds the layer another runner made: used as it
   is, pex not run, nothing resolved here;
3. else pex resolves the folder, and its layer is made.

A layer this build made is noted for the registry layer cache (written after a push).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..image.layer import BuiltLayer, LayerSource
from .baseinfo import BaseInfo
from .deps import DEPS_DIR, DepsKey, ResolvedDeps, deps_cached, deps_key, requirements_file, resolve_deps
from .lockfile import PlatformLock
from .pyenv import PythonInputs
from .recipecontext import MadeLayer, RecipeContext

__all__ = ["DepsLayer", "deps_layer"]

KIND = "python-deps"
CREATED_BY = "ociassemble: python dependencies (pex)"


@dataclass(frozen=True)
class DepsLayer:
    """The deps layer and where it came from."""

    made: MadeLayer
    #: the flat site-packages the layer holds, for the SBOM (None: the layer came from the registry cache)
    site: Path | None
    #: whether this build ran pex (False: the deps were cached locally or in the registry)
    pex_ran: bool


def deps_layer(ctx: RecipeContext, inputs: PythonInputs, info: BaseInfo, locked: PlatformLock | None) -> DepsLayer:
    """The deps layer for ``inputs``' merged requirements (or the ``locked`` files) on the base ``info`` describes.

    Raises BuildError (``resolve_deps``) when pex cannot resolve or install them.
    """
    with requirements_file(ctx.cache, inputs.merged.text()) as requirements:
        key = deps_key([requirements], info, indexes=inputs.indexes, locked=locked)
        shared = _from_registry(ctx, key)
        if shared is not None:
            return DepsLayer(shared, None, pex_ran=False)
        resolved = resolve_deps(ctx.cache, [requirements], info, log=ctx.log, debug=ctx.debug, source=inputs.source,
                                indexes=inputs.indexes, locked=locked)
    made = _local_layer(ctx, key, resolved)
    if ctx.layer_cache is not None:
        ctx.layer_cache.note_deps(key.layer_key(ctx.compression, ctx.epoch), made.layer)
    return DepsLayer(made, resolved.site, resolved.pex_ran)


def _from_registry(ctx: RecipeContext, key: DepsKey) -> MadeLayer | None:
    """The layer from the registry layer cache, when it is on and the deps are not in the local cache."""
    if ctx.layer_cache is None or deps_cached(ctx.cache, key):
        return None
    layer = ctx.layer_cache.find_deps(key.layer_key(ctx.compression, ctx.epoch), ctx.compression)
    if layer is None:
        return None
    ctx.log(f"layer {KIND}")
    ctx.log("python deps from the registry cache: pex not run")
    return MadeLayer(KIND, layer, CREATED_BY)


def _local_layer(ctx: RecipeContext, key: DepsKey, resolved: ResolvedDeps) -> MadeLayer:
    """The layer of the deps folder: from the local layer index, or tarred and indexed.

    The folder never changes once made, so its layer is indexed by what made it (plus the
    folder's token: a folder resolved again gets a new one), not by its files' stat stamps:
    a cache copied or restored (new inodes and ctimes, as CI cache actions give) then reuses
    the layer instead of re-tarring ~6000 files.
    """
    index = key.layer_key(ctx.compression, ctx.epoch, token=resolved.token) if resolved.token is not None else None
    record = ctx.cache.get_layer(index) if index is not None else None
    if record is not None:
        ctx.log(f"layer {KIND}")
        return MadeLayer(KIND, BuiltLayer.from_record(record), CREATED_BY)
    made = ctx.build(KIND, [LayerSource(resolved.site, DEPS_DIR)], CREATED_BY, by_reference=False)
    if index is not None:
        ctx.cache.put_layer(index, made.layer.to_record())
    return made
