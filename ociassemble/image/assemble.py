"""Assembling an image: a base plus new layers and config become a manifest, as values.

An ``Image`` is immutable: its manifest and config bytes are fixed, so its digest
is too. ``ImageBuilder`` collects layers and config changes over a base and
``build()`` returns a new ``Image``; the base is never changed.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Callable, Iterable, Mapping

from ..errors import ArchiveError
from .cache import BlobCache
from .digest import Digest
from .layer import BuiltLayer
from .oci import Descriptor, History, ImageConfig, Manifest, MediaType, Platform, parse_json

__all__ = ["Image", "ImageBuilder", "BlobFetcher", "FetchByDigest", "rfc3339", "stack"]

#: Fetches a blob that is not in the cache yet (a registry base's layers) into it.
BlobFetcher = Callable[[Descriptor, BlobCache], None]


@dataclass(frozen=True)
class FetchByDigest:
    """A ``BlobFetcher`` that asks a blob's own fetcher (``by_digest``), else ``default``.

    An image may hold blobs from several places: a registry base's layers and layers
    taken from a registry layer cache, each fetched from where it lives.
    """

    by_digest: Mapping[str, BlobFetcher]
    default: BlobFetcher | None = None

    def __call__(self, desc: Descriptor, cache: BlobCache) -> None:
        fetch = self.by_digest.get(desc.digest, self.default)
        if fetch is None:
            raise ArchiveError(f"blob {desc.digest} is not in the cache at {cache.root} and has no source")
        fetch(desc, cache)


def rfc3339(epoch: int) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Image:
    """A complete image: manifest and config (as parsed and as the exact bytes hashed).

    ``fetch`` brings missing blobs into the cache (lazily pulled bases, layers taken
    from a registry layer cache). Where a blob lives in a registry, a push to the same
    registry mounts it instead of uploading: ``origin`` names the repository of the
    ``origin_digests`` (a pulled base's layers), ``origins`` maps any other digest to
    its ``registry/repository``; ``origin_of`` answers for one digest.
    """

    manifest: Manifest
    manifest_bytes: bytes
    config: ImageConfig
    config_bytes: bytes
    fetch: BlobFetcher | None = None
    origin: str | None = None
    origin_digests: frozenset[str] = frozenset()
    origins: Mapping[str, str] = field(default_factory=dict, hash=False)

    def origin_of(self, digest: str) -> str | None:
        """The ``registry/repository`` holding blob ``digest``, if it is known to be in one."""
        found = self.origins.get(digest)
        if found is not None:
            return found
        return self.origin if self.origin and digest in self.origin_digests else None

    @property
    def digest(self) -> str:
        return str(Digest.of_bytes(self.manifest_bytes))

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.manifest.media_type, self.digest, len(self.manifest_bytes))

    @property
    def platform(self) -> Platform:
        return self.config.platform

    def blobs(self) -> list[Descriptor]:
        """The config and every layer (config first), deduplicated by digest."""
        seen: set[str] = set()
        out = []
        for d in (self.manifest.config, *self.manifest.layers):
            if d.digest not in seen:
                seen.add(d.digest)
                out.append(d)
        return out

    def ensure_blobs(self, cache: BlobCache) -> None:
        """Make every blob local (an output needs the bytes; a push may not)."""
        for d in self.blobs():
            if not cache.has(d.digest):
                if d.digest == self.manifest.config.digest:
                    cache.put_bytes(self.config_bytes)
                    continue
                if self.fetch is None:
                    raise ArchiveError(f"blob {d.digest} of image {self.digest} is not in the cache and has no source")
                self.fetch(d, cache)

    @classmethod
    def from_parts(cls, manifest: Manifest, config_bytes: bytes, **kw: object) -> "Image":
        try:
            config = ImageConfig.from_json(parse_json(config_bytes))
        except ValueError as exc:
            raise ArchiveError(f"image config {manifest.config.digest} is not JSON: {exc}") from None
        if Digest.of_bytes(config_bytes).value != manifest.config.digest:
            raise ArchiveError(f"image config does not match its digest {manifest.config.digest}")
        if len(config.diff_ids) != len(manifest.layers):
            raise ArchiveError(
                f"image {manifest.config.digest}: {len(manifest.layers)} layers but {len(config.diff_ids)} diff_ids"
            )
        return cls(manifest, manifest.to_bytes(), config, config_bytes, **kw)  # type: ignore[arg-type]


@dataclass
class ImageBuilder:
    """Layers and config over a base, turned into a new ``Image`` by ``build``.

    Example::

        b = ImageBuilder(cache, base)
        b.add_layer(build_layer(cache, [LayerSource(Path("app"), "/opt/app")]), "COPY app /opt/app")
        b.config = b.config.with_env({"PORT": "8080"})
        image = b.build(created=0)
    """

    cache: BlobCache
    base: Image | None = None
    platform: Platform = field(default_factory=Platform)
    config: ImageConfig = field(init=False)
    layers: list[tuple[BuiltLayer, History]] = field(default_factory=list, init=False)
    annotations: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.base is not None:
            self.config = self.base.config
        else:
            self.config = ImageConfig(platform=self.platform)

    def add_layer(self, layer: BuiltLayer, created_by: str, comment: str | None = None) -> None:
        self.layers.append((layer, History(created_by=created_by, comment=comment)))

    def build(self, created: int = 0) -> Image:
        when = rfc3339(created)
        base_layers: tuple[Descriptor, ...] = self.base.manifest.layers if self.base else ()
        base_history: tuple[History, ...] = self.config.history if self.base else ()
        history = list(base_history) + [replace(h, created=when) for _, h in self.layers]
        diff_ids = tuple(self.config.diff_ids if self.base else ()) + tuple(l.diff_id for l, _ in self.layers)
        config = replace(self.config, diff_ids=diff_ids, history=tuple(history), created=when)
        config_bytes = config.to_bytes()
        config_desc = Descriptor(MediaType.CONFIG, str(self.cache.put_bytes(config_bytes)), len(config_bytes))
        layers = base_layers + tuple(l.descriptor for l, _ in self.layers)
        manifest = Manifest(config=config_desc, layers=layers, annotations=dict(self.annotations) or None)
        base_fetch = self.base.fetch if self.base else None
        # layers taken from a registry layer cache live there until an output needs their bytes
        remote = {l.descriptor.digest: l for l, _ in self.layers if l.origin is not None}
        fetchers = {d: l.fetch for d, l in remote.items() if l.fetch is not None}
        origins = {**(self.base.origins if self.base else {}), **{d: str(l.origin) for d, l in remote.items()}}
        return Image(
            manifest=manifest,
            manifest_bytes=manifest.to_bytes(),
            config=config,
            config_bytes=config_bytes,
            fetch=FetchByDigest(fetchers, base_fetch) if fetchers else base_fetch,
            origin=self.base.origin if self.base else None,
            origin_digests=frozenset(d.digest for d in base_layers) if self.base and self.base.origin else frozenset(),
            origins=MappingProxyType(origins),
        )


def stack(cache: BlobCache, base: Image, layers: Iterable[tuple[BuiltLayer, str]], created: int,
          config: ImageConfig | None = None) -> Image:
    """``base`` with ``layers`` (each with its history's ``created_by``) on top, dated ``created``, in one
    call: what ``ImageBuilder`` builds, for a caller that has every layer at hand (the recipe's
    image, and the part of it a speculative push sends early). ``config`` (default: the base's)
    is the new image's; its diff_ids and history are filled in here."""
    b = ImageBuilder(cache, base)
    for layer, created_by in layers:
        b.add_layer(layer, created_by)
    if config is not None:
        b.config = config
    return b.build(created)
