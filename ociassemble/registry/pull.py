"""Pulling an image from a registry: manifest and config now, layers only when an output needs them.

``pull_image`` resolves a tag (through an index to this machine's platform, or to
the one ``platform`` names, or to every platform: ``"all"``), keeps
the manifest's exact bytes (so its digest is the registry's), fetches and verifies
the config, and returns an ``Image`` whose ``fetch`` downloads a layer into the cache
on demand and whose ``origin`` lets a push to the same registry mount the layers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import requests
import urllib3.exceptions

from ..errors import ArchiveError, DigestMismatchError, NotAnImageError, TransientRegistryError
from ..image.assemble import Image
from ..image.cache import BlobCache
from ..image.diffid import stage_layer, verify_cached_diff_id
from ..image.digest import Digest
from ..image.oci import CONFIG_MAX, Descriptor, ImageConfig, Index, Manifest, MediaType, Platform, parse_json
from ..image.imageindex import ImageIndex, Target
from ..image.platform import ALL, pick_platform
from ..transport.layout import write_layout
from .client import RegistryClient, RegistryOptions
from .http import short_reason
from .reference import Reference, parse_reference
from .retry import call_with_retry

__all__ = ["RegistryBlobFetcher", "pull_image", "pull_to_layout"]

log = logging.getLogger("ociassemble.registry")

class _ResponseReader:
    """``read(n)`` over a streaming response's raw bytes; network failures become transient errors."""

    def __init__(self, resp: requests.Response, what: str) -> None:
        self._resp = resp
        self._what = what

    def read(self, n: int = -1) -> bytes:
        try:
            return self._resp.raw.read(n if n >= 0 else None, decode_content=False)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientRegistryError(f"{self._what}: connection failed ({short_reason(exc)})") from exc


@dataclass(frozen=True)
class RegistryBlobFetcher:
    """``Image.fetch`` for a pulled image: downloads one blob into the cache, verified.

    Thread-safe; retried per the client's policy; a blob already cached is free. A
    layer named in ``diff_ids`` (digest -> its config's diff_id) is verified against it
    while it streams in (``diffid.stage_layer``), once per blob.
    """

    client: RegistryClient
    repo: str
    diff_ids: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __call__(self, desc: Descriptor, cache: BlobCache) -> None:
        diff_id = self.diff_ids.get(desc.digest)
        where = f"{self.client.registry}/{self.repo}"
        if cache.has_current(desc.digest):  # (a held blob whose files moved is fetched again)
            if diff_id is not None:
                verify_cached_diff_id(cache, desc, diff_id, f"image {where}")
            return
        scopes = self.client.scopes(self.repo)

        def attempt(_n: int) -> None:
            if cache.has_current(desc.digest):
                return
            resp = self.client.open_blob(self.repo, desc.digest, scopes)
            try:
                body = _ResponseReader(resp, f"downloading blob {desc.digest} from {where}")
                if diff_id is None:
                    cache.ingest(body, Digest(desc.digest), desc.size, where)  # type: ignore[arg-type]
                else:
                    stage_layer(cache, body, desc, diff_id, f"image {where}").commit()  # type: ignore[arg-type]
            finally:
                resp.close()

        log.info("fetching blob %s (%d bytes) from %s", desc.digest, desc.size, where)
        call_with_retry(self.client.options.retry, f"downloading blob {desc.digest} from {where}", attempt)


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = parse_json(data)
    except ValueError as exc:
        raise ArchiveError(f"{what} is not usable JSON ({exc}): the registry sent something that is not an image "
                           "manifest") from None
    if not isinstance(doc, dict):
        raise ArchiveError(f"{what} is not a JSON object")
    return doc


def _get_manifest(client: RegistryClient, ref: Reference, reference: str, scopes: tuple[str, ...]) -> bytes:
    policy = client.options.retry
    data, _ctype, header = call_with_retry(policy, f"reading manifest {reference} of {ref.name}",
                                           lambda _n: client.get_manifest(ref.repository, reference, scopes))
    actual = str(Digest.of_bytes(data))
    expected = reference if reference.startswith("sha256:") else (header if header.startswith("sha256:") else None)
    if expected and actual != expected:
        raise DigestMismatchError(expected, actual, f"registry {ref.name}")
    return data


def pull_image(ref: str, cache: BlobCache, *, options: RegistryOptions | None = None,
               platform: Platform | str | None = None, verify_diff_ids: bool = True) -> Target:
    """Resolve ``ref`` to an image: manifest (exact bytes) and config; layers stay remote.

    An index (OCI or docker manifest list) is resolved to ``platform`` (default: this
    machine's linux platform), or with ``platform="all"`` read whole as an ``ImageIndex``
    (its exact bytes kept, so its digest is the registry's; each image's manifest and
    config fetched, no layer). The returned image's ``fetch`` downloads layers into
    ``cache`` when an output needs them (checked against the config's diff_ids with
    ``verify_diff_ids``); ``origin`` is ``registry/repository`` and
    ``origin_digests`` its layer digests, so a push to the same registry mounts them.

    Example::

        base = pull_image("127.0.0.1:5000/python:3.11", cache)
        write_layout(base, cache, Path("out"))   # downloads the layers now

    Raises ImageReferenceError, AuthError, RegistryError (e.g. MANIFEST_UNKNOWN for
    a missing tag), DigestMismatchError, InputError (no image for the platform).
    """
    r = parse_reference(ref)
    options = (options or RegistryOptions()).scoped_to([r.registry])
    client = RegistryClient(r.registry, options)
    scopes = client.scopes(r.repository)
    data = _get_manifest(client, r, r.reference, scopes)
    doc = _load(data, f"manifest {r}")
    media = doc.get("mediaType") or ""
    if MediaType.to_oci(media) == MediaType.INDEX or ("manifests" in doc and "layers" not in doc):
        index = Index.from_json(doc)
        if platform == ALL:
            images = []
            for entry in index.manifests:
                sub = _get_manifest(client, r, entry.digest, scopes)
                sub_doc = _load(sub, f"manifest {entry.digest} of {r}")
                if "layers" not in sub_doc:
                    raise ArchiveError(f"{r}: index entry {entry.digest} is not an image manifest (an index in an "
                                       "index?); pull one platform with --platform")
                images.append(_image(client, r, scopes, cache, options, sub, sub_doc,
                                     sub_doc.get("mediaType") or entry.media_type, verify_diff_ids))
            return ImageIndex(tuple(images), index, data)  # its own bytes: its digest is the registry's
        chosen = pick_platform(index, f"image {r}", platform if isinstance(platform, Platform) else None)
        data = _get_manifest(client, r, chosen.digest, scopes)
        doc = _load(data, f"manifest {chosen.digest} of {r}")
        media = doc.get("mediaType") or chosen.media_type
    return _image(client, r, scopes, cache, options, data, doc, media, verify_diff_ids)


def _image(client: RegistryClient, r: Reference, scopes: tuple[str, ...], cache: BlobCache, options: RegistryOptions,
           data: bytes, doc: dict[str, Any], media: str, verify_diff_ids: bool) -> Image:
    """The ``Image`` of one manifest (its exact ``data``, parsed as ``doc``): its config fetched, its layers remote."""
    if "layers" not in doc:
        raise ArchiveError(f"{r} is not an image manifest (mediaType {media or 'unset'}): only OCI and docker "
                           "schema2 images can be used")
    manifest = Manifest.from_json(doc)
    if media:
        manifest = replace(manifest, media_type=media)
    if manifest.kind is not None:
        raise NotAnImageError(manifest, data, str(r))
    config_desc = manifest.config
    if cache.has(config_desc.digest):
        with cache.open(config_desc.digest) as f:
            config_bytes = f.read(CONFIG_MAX + 1)
    else:
        config_bytes = call_with_retry(
            options.retry, f"reading config {config_desc.digest} of {r}",
            lambda _n: client.read_blob(r.repository, config_desc.digest, scopes, CONFIG_MAX))
    actual = Digest.of_bytes(config_bytes)
    if actual.value != config_desc.digest:
        raise DigestMismatchError(config_desc.digest, actual.value, f"registry {r.name}")
    cache.put_bytes(config_bytes)
    try:
        config = ImageConfig.from_json(parse_json(config_bytes))
    except ValueError:
        raise ArchiveError(f"the config {config_desc.digest} of {r} is not JSON") from None
    if len(config.diff_ids) != len(manifest.layers):
        raise ArchiveError(f"image {r}: {len(manifest.layers)} layers but {len(config.diff_ids)} diff_ids in its config")
    return Image(manifest, data, config, config_bytes,
                 fetch=RegistryBlobFetcher(client, r.repository,
                                           dict(zip((d.digest for d in manifest.layers), config.diff_ids))
                                           if verify_diff_ids else {}),
                 origin=r.name,
                 origin_digests=frozenset(layer.digest for layer in manifest.layers))


def pull_to_layout(ref: str, cache: BlobCache, dest: Path | str, *, tag: str | None = None,
                   options: RegistryOptions | None = None, platform: Platform | str | None = None) -> Target:
    """``ociassemble pull REF oci:DIR[:TAG]``: pull ``ref`` with all its layers into an OCI layout
    (with ``platform="all"``, every platform's image under the registry's index).

    ``tag`` names the image in the layout (default: the reference's tag). Returns the image or index.
    Raises what ``pull_image`` and ``write_layout`` raise.
    """
    image = pull_image(ref, cache, options=options, platform=platform)
    r = parse_reference(ref)
    write_layout(image, cache, Path(dest), tag or r.tag)
    return image

