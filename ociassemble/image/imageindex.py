"""A multi-platform image: one ``Image`` per platform under an OCI image index, as values.

Like ``Image``, an ``ImageIndex`` is immutable and its bytes fix its digest: the
index lists the images in the order given (the order ``--platform`` named them),
each entry with its platform, so the same images give the same index digest.
Layers that do not depend on the platform are the same blobs in every image;
``blobs`` lists each once, which is what lets a write or a push store it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InputError
from .assemble import Image
from .cache import BlobCache
from .digest import Digest
from .oci import Descriptor, Index, MediaType, Platform
from .platform import matches, normalize

__all__ = ["ImageIndex", "Target", "for_platform", "platforms_of"]


@dataclass(frozen=True)
class ImageIndex:
    """Images for several platforms, and the index (as parsed and as the exact bytes hashed)."""

    images: tuple[Image, ...]
    index: Index
    index_bytes: bytes

    @classmethod
    def of(cls, images: Sequence[Image], annotations: dict[str, str] | None = None) -> "ImageIndex":
        """The index of ``images``, one entry each, in their order; two for one platform is refused."""
        platforms = [normalize(image.platform) for image in images]
        for i, p in enumerate(platforms):
            if p in platforms[:i]:
                raise InputError(f"two images for {p} in one index: give each platform once")
        entries = tuple(Descriptor(image.manifest.media_type, image.digest, len(image.manifest_bytes), platform=p)
                        for image, p in zip(images, platforms))
        index = Index(entries, annotations=annotations or None)
        return cls(tuple(images), index, index.to_bytes())

    @property
    def digest(self) -> str:
        return str(Digest.of_bytes(self.index_bytes))

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(MediaType.INDEX, self.digest, len(self.index_bytes))

    @property
    def platforms(self) -> tuple[Platform, ...]:
        return tuple(normalize(image.platform) for image in self.images)

    def blobs(self) -> list[Descriptor]:
        """Every config and layer of every image, each once (first image first)."""
        seen: set[str] = set()
        out = []
        for image in self.images:
            for d in image.blobs():
                if d.digest not in seen:
                    seen.add(d.digest)
                    out.append(d)
        return out

    def ensure_blobs(self, cache: BlobCache) -> None:
        for image in self.images:
            image.ensure_blobs(cache)

    def image_for(self, want: Platform, where: str = "the image") -> Image:
        """The image for ``want``; InputError naming the platforms there are."""
        for image in self.images:
            if matches(image.platform, want):
                return image
        have = ", ".join(str(p) for p in self.platforms)
        raise InputError(f"{where} has no image for {want}; it has {have} (pick one with --platform)")


#: What a build writes or a push sends: one image, or an index of several.
Target = Image | ImageIndex


def for_platform(target: Target, want: Platform | None, where: str) -> Image:
    """The one image of ``target`` for ``want``: an index needs ``want``; a single image must match it."""
    if isinstance(target, ImageIndex):
        if want is None:
            have = ", ".join(str(p) for p in target.platforms)
            raise InputError(f"{where} is a multi-platform image ({have}); pick one with --platform, e.g. --platform {target.platforms[0]}")
        return target.image_for(want, where)
    if want is not None and not matches(target.platform, want):
        raise InputError(f"{where} is for {normalize(target.platform)}, not {want}; build it for {want} (--platform {want})")
    return target


def platforms_of(target: Target) -> tuple[Platform, ...]:
    return target.platforms if isinstance(target, ImageIndex) else (normalize(target.platform),)
