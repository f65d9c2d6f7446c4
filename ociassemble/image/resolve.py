"""Following a descriptor to an image in a store of blobs: through an index to one platform's
manifest (or every one), its config, its layers staged all or nothing.

What reading an image from an OCI layout and from an OCI archive share: the store only
gives bytes (``read``) and copies layers (``ingest``); here each JSON document is checked
against its digest and parsed, an index is resolved to a platform, and every layer is
staged before any is committed, so a refused image leaves nothing in the cache::

    target = resolve_image(read, descriptor, "OCI layout ./base", ingest, platform)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ArchiveError, DigestMismatchError, NotAnImageError
from ..sizes import human_size
from .assemble import Image
from .diffid import StagedBlob, all_or_nothing
from .digest import Digest
from .imageindex import ImageIndex, Target
from .oci import CONFIG_MAX, MANIFEST_MAX, Descriptor, Index, Manifest, MediaType, Platform, parse_json

__all__ = ["check_size", "load_index", "load_json", "resolve_image"]

#: How deep an index may hold indexes (real images: one index, rarely two).
_MAX_DEPTH = 8
#: A store's read of a small blob: at most ``size + 1`` of its bytes (so one that is too long shows).
ReadBlob = Callable[[Descriptor], bytes]
#: A store's copy of a layer into the cache, checked against its digest and (given) diff_id, not yet committed.
Ingest = Callable[[Descriptor, str], StagedBlob]


def load_json(data: bytes, what: str) -> dict[str, Any]:
    """``data`` as a JSON object; ArchiveError naming ``what`` when it is not one."""
    try:
        obj = parse_json(data)
    except ValueError as exc:
        raise ArchiveError(f"{what} is not valid JSON ({exc}): not an OCI image") from None
    if not isinstance(obj, dict):
        raise ArchiveError(f"{what} is not a JSON object: not an OCI image")
    return obj


def load_index(data: bytes, where: str) -> Index:
    """The index of ``where``'s ``index.json`` (an OCI layout's, or an OCI archive's): where reading it starts."""
    return Index.from_json(load_json(data, f"{where}/index.json"))


def check_size(size: int, limit: int, what: str, where: str) -> None:
    """Refuse a JSON document of an image (a manifest, an index, a config) bigger than ``limit``
    (``oci.MANIFEST_MAX``, ``oci.CONFIG_MAX``) before it is read: a hostile layout or archive
    could otherwise have hundreds of MB read into memory and parsed."""
    if size > limit:
        raise ArchiveError(f"{where}: {what} is {human_size(size)}, more than the {human_size(limit)} ociassemble "
                           "reads of one: the image is broken or hostile; re-create it")


def _verified(read: ReadBlob, d: Descriptor, where: str, what: str, limit: int) -> bytes:
    check_size(d.size, limit, f"{what} {d.digest}", where)
    data = read(d)
    actual = Digest.of_bytes(data)
    if actual.value != d.digest:
        raise DigestMismatchError(d.digest, actual.value, where)
    return data


def resolve_image(read: ReadBlob, desc: Descriptor, where: str, ingest: Ingest,
                  platform: Platform | str | None = None, depth: int = 0) -> Target:
    """Follow ``desc`` (a manifest, or an index) to an ``Image``, or with ``platform``
    ``"all"`` an index to an ``ImageIndex`` of every image in it.

    An index is resolved to ``platform`` (default: this machine's). ``read(desc)`` gives a
    small JSON blob's bytes, verified here against its digest; ``ingest(desc, diff_id)``
    copies a layer, verified against its digest and its config's diff_id, into a
    ``StagedBlob``. Every layer is staged before any is committed: a refused image leaves
    nothing in the cache; ``depth`` counts the indexes above ``desc`` (more than eight: refused).
    Raises ArchiveError (DigestMismatchError) for a broken store, a document over its size limit,
    NotAnImageError for an artifact that is not an image.
    """
    from .platform import ALL, pick_platform

    if depth > _MAX_DEPTH:
        raise ArchiveError(f"{where}: indexes nested more than {_MAX_DEPTH} deep: the image is broken or hostile; "
                           "re-create it")
    data = _verified(read, desc, where, "manifest", MANIFEST_MAX)
    doc = load_json(data, f"manifest {desc.digest} in {where}")
    media = MediaType.to_oci(doc.get("mediaType") or desc.media_type)
    if media == MediaType.INDEX or "manifests" in doc:
        index = Index.from_json(doc)
        if platform == ALL:
            images = []
            for entry in index.manifests:
                got = resolve_image(read, entry, where, ingest, None if entry.platform is None else entry.platform,
                                    depth + 1)
                if isinstance(got, ImageIndex):
                    raise ArchiveError(f"{where}: index {desc.digest} holds another index; give one platform with --platform")
                images.append(got)
            return ImageIndex(tuple(images), index, data)  # its own bytes: its digest must not change
        want = platform if isinstance(platform, Platform) else None
        return resolve_image(read, pick_platform(index, where, want), where, ingest, want, depth + 1)
    manifest = Manifest.from_json(doc)
    if manifest.kind is not None:
        raise NotAnImageError(manifest, data, f"manifest {desc.digest} in {where}")
    config_bytes = _verified(read, manifest.config, where, "config", CONFIG_MAX)
    image = Image.from_parts(manifest, config_bytes)
    with all_or_nothing() as staged:
        for layer, diff_id in zip(manifest.layers, image.config.diff_ids):
            staged.append(ingest(layer, diff_id))
    # keep the original manifest bytes: its digest must not change on the way through
    return Image(manifest, data, image.config, config_bytes)
