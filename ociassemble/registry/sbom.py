"""Pushing an image's SBOM as an OCI artifact that refers to it, tagged where tools look for it.

The document and the artifact are made by ``image.sbom`` (the engine, which knows
nothing of registries); this is the registry's half.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..image.assemble import Image
from ..image.cache import BlobCache
from ..image.sbom import sbom_artifact, sbom_tag
from .client import RegistryOptions
from .push import push_image
from .reference import parse_reference

__all__ = ["push_sbom"]


def push_sbom(image: Image, cache: BlobCache, data: bytes, refs: Sequence[str], *, options: RegistryOptions | None = None,
              created: int = 0) -> tuple[Image, list[str]]:
    """Push the SBOM artifact to each repository of ``refs``, tagged ``sha256-<hex>.sbom``.

    A registry with the referrers API (OCI 1.1) also lists it under the image through
    ``subject``; distribution 2.8 stores the manifest and ignores ``subject``, and the
    tag is how tools (cosign, oras) find it there. Returns the artifact and the references.
    Raises what ``push_image`` raises.
    """
    artifact = sbom_artifact(image, cache, data, created=created)
    targets = list(dict.fromkeys(f"{r.registry}/{r.repository}:{sbom_tag(image.digest)}"
                                 for r in (parse_reference(ref) for ref in refs)))
    result = push_image(artifact, cache, targets, options=options)
    return artifact, list(result.refs)
