"""What an image is, as data: the ``inspect`` document (a stable JSON schema) and a layer's file list.

The schema is documented in ``docs/json.md``; ``INSPECT_SCHEMA_VERSION`` changes only when a
field is removed or changes meaning (new fields may be added within a version).

Example::

    image = load_image("oci-archive:image.tar", cache)
    doc = describe_image(image, name="oci-archive:image.tar")
    for entry in layer_entries(image, cache, 0):
        print(entry["path"], entry["size"])
"""

from __future__ import annotations

import json
import stat
import tarfile
from collections.abc import Iterator
from typing import Any, BinaryIO

from ..errors import ArchiveError, UsageError
from .assemble import Image
from .cache import BlobCache
from .digest import Digest
from .imageindex import ImageIndex
from .oci import Descriptor, Manifest, MediaType, parse_json
from .tarread import entries_of, stream_tar

__all__ = [
    "INSPECT_SCHEMA_VERSION",
    "describe_artifact",
    "render_artifact",
    "describe_image",
    "describe_index",
    "render_index",
    "layer_entries",
    "open_layer",
    "render_entry",
    "render_image",
]

#: ``schemaVersion`` of ``inspect --json`` and ``inspect --layer N --list --json`` documents.
INSPECT_SCHEMA_VERSION = 1

#: a tar member's type as inspect and verify name it
TAR_TYPES = {
    tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file", tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "chr", tarfile.BLKTYPE: "blk",
    tarfile.FIFOTYPE: "fifo",
}


#: layer media types as inspect and verify print them
SHORT_MEDIA = {MediaType.LAYER_GZIP: "tar+gzip", MediaType.LAYER_ZSTD: "tar+zstd", MediaType.LAYER_TAR: "tar"}


def describe_image(image: Image, *, name: str = "") -> dict[str, Any]:
    """The ``inspect --json`` document of ``image`` (``name``: the location as the user gave it)."""
    cfg = image.config
    built = [h for h in cfg.history if not h.empty_layer]
    # History lines up with layers only when the counts agree (some bases keep no history).
    history = built if len(built) == len(image.manifest.layers) else [None] * len(image.manifest.layers)
    layers = []
    for i, (desc, diff_id, hist) in enumerate(zip(image.manifest.layers, cfg.diff_ids, history)):
        layers.append({
            "index": i,
            "digest": desc.digest,
            "size": desc.size,
            "mediaType": desc.media_type,
            "diffID": diff_id,
            "createdBy": hist.created_by if hist else "",
            "comment": hist.comment if hist else None,
        })
    return {
        "schemaVersion": INSPECT_SCHEMA_VERSION,
        "kind": "image",
        "name": name,
        "digest": image.digest,
        "mediaType": image.manifest.media_type,
        "manifestSize": len(image.manifest_bytes),
        "platform": {"os": cfg.platform.os, "architecture": cfg.platform.architecture,
                     "variant": cfg.platform.variant},
        "created": cfg.created,
        "config": {
            "digest": image.manifest.config.digest,
            "size": image.manifest.config.size,
            "cmd": list(cfg.cmd) if cfg.cmd is not None else None,
            "entrypoint": list(cfg.entrypoint) if cfg.entrypoint is not None else None,
            "env": list(cfg.env),
            "exposedPorts": list(cfg.exposed_ports),
            "workingDir": cfg.working_dir,
            "user": cfg.user,
            "stopSignal": cfg.stop_signal,
            "labels": dict(cfg.labels),
        },
        "layers": layers,
        "totalSize": sum(d.size for d in image.manifest.layers),
    }


def describe_index(index: ImageIndex, *, name: str = "") -> dict[str, Any]:
    """The ``inspect --json`` document of a multi-platform image: the index and, per platform
    (in the index's order), its manifest's digest and size and its layers' total size.
    ``inspect --platform P`` describes one of them with ``describe_image``."""
    from .platform import normalize

    media = MediaType.INDEX
    try:
        media = parse_json(index.index_bytes).get("mediaType") or media  # a docker manifest list says so
    except (ValueError, AttributeError):
        pass
    layers = {d.digest: d.size for image in index.images for d in image.manifest.layers}
    manifests = []
    for image in index.images:
        p = normalize(image.platform)
        manifests.append({
            "platform": str(p),
            "os": p.os,
            "architecture": p.architecture,
            "variant": p.variant,
            "digest": image.digest,
            "mediaType": image.manifest.media_type,
            "size": len(image.manifest_bytes),
            "totalSize": sum(d.size for d in image.manifest.layers),
        })
    return {
        "schemaVersion": INSPECT_SCHEMA_VERSION,
        "kind": "index",
        "name": name,
        "digest": index.digest,
        "mediaType": media,
        "indexSize": len(index.index_bytes),
        "manifests": manifests,
        "totalSize": sum(layers.values()),  # a layer the platforms share counted once: what a pull of all downloads
    }


def render_index(doc: dict[str, Any]) -> str:
    """The human form of ``describe_index``: one line per platform."""
    from ..sizes import human_size

    lines = [
        f"Name:       {doc['name']}",
        f"Digest:     {doc['digest']}",
        f"MediaType:  {doc['mediaType']}",
        f"Platforms ({len(doc['manifests'])}, {human_size(doc['totalSize'])} of layers, each once):",
        f"  {'PLATFORM':<16}  {'MANIFEST DIGEST':<71}  {'LAYERS':>10}",
    ]
    for m in doc["manifests"]:
        lines.append(f"  {m['platform']:<16}  {m['digest']:<71}  {human_size(m['totalSize']):>10}")
    lines.append("(one platform's config and layers: inspect --platform " +
                 (doc["manifests"][0]["platform"] if doc["manifests"] else "OS/ARCH") + ")")
    return "\n".join(lines)


def describe_artifact(manifest: Manifest, manifest_bytes: bytes, *, name: str = "") -> dict[str, Any]:
    """The ``inspect --json`` document of an OCI artifact (an SBOM, a signature, a cache entry).

    An artifact has no runnable config, so this is the manifest itself: what it is
    (``artifactType``), what it refers to (``subject``) and its blobs.
    """
    return {
        "schemaVersion": INSPECT_SCHEMA_VERSION,
        "kind": "artifact",
        "name": name,
        "digest": Digest.of_bytes(manifest_bytes).value,
        "mediaType": manifest.media_type,
        "manifestSize": len(manifest_bytes),
        "artifactType": manifest.kind,
        "subject": manifest.subject.to_json() if manifest.subject else None,
        "config": manifest.config.to_json(),
        "annotations": dict(manifest.annotations or {}),
        "blobs": [{"index": i, **d.to_json()} for i, d in enumerate(manifest.layers)],
        "totalSize": sum(d.size for d in manifest.layers),
    }


def render_artifact(doc: dict[str, Any]) -> str:
    """The human form of ``describe_artifact``."""
    from ..sizes import human_size

    subject = doc["subject"]
    lines = [
        f"Name:         {doc['name']}",
        f"Digest:       {doc['digest']}",
        f"MediaType:    {doc['mediaType']}",
        f"ArtifactType: {doc['artifactType']}",
        f"Subject:      {subject['digest'] if subject else '(none)'}",
        "Annotations:",
    ]
    lines += [f"  {k}={v}" for k, v in sorted(doc["annotations"].items())]
    lines.append(f"Blobs ({len(doc['blobs'])}, {human_size(doc['totalSize'])}):")
    lines.append(f"  {'#':>2}  {'DIGEST':<19}  {'SIZE':>10}  {'TYPE':<28}  TITLE")
    for b in doc["blobs"]:
        title = (b.get("annotations") or {}).get("org.opencontainers.image.title", "")
        lines.append(f"  {b['index']:>2}  {b['digest'][:19]}  {human_size(b['size']):>10}  {b['mediaType']:<28}  {title}")
    return "\n".join(lines)


def _layer(image: Image, index: int) -> Descriptor:
    count = len(image.manifest.layers)
    if not 0 <= index < count:
        raise UsageError(f"--layer {index}: the image has {count} layers, numbered 0 to {count - 1} (see 'ociassemble inspect')")
    return image.manifest.layers[index]


def open_layer(image: Image, cache: BlobCache, desc: Descriptor) -> BinaryIO:
    """The uncompressed tar stream of one layer, fetched into the cache first if it is remote.

    Raises ArchiveError for a media type that is not a tar layer.
    """
    if not cache.has(desc.digest):
        if image.fetch is None:
            raise ArchiveError(f"layer {desc.digest} is not in the cache and the image has no source")
        image.fetch(desc, cache)  # a registry image: this layer only
    media = MediaType.to_oci(desc.media_type)
    f = cache.open(desc.digest)
    if media == MediaType.LAYER_GZIP:
        from isal import igzip_threaded

        return igzip_threaded.open(f, "rb")  # type: ignore[return-value]
    if media == MediaType.LAYER_ZSTD:
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(f, closefd=True, read_across_frames=True)  # type: ignore[return-value]
    if media == MediaType.LAYER_TAR:
        return f
    f.close()
    raise ArchiveError(f"layer {desc.digest} has media type {desc.media_type!r}: not a tar layer, cannot list it")


def layer_entries(image: Image, cache: BlobCache, index: int) -> Iterator[dict[str, Any]]:
    """Each entry of layer ``index`` as ``{path, type, size, mode, uid, gid, linkname}``, in tar order.

    Streams through the decompressed tar (flat memory). ``type`` is file, dir, symlink,
    hardlink, chr, blk, fifo, or whiteout (an OCI ``.wh.`` entry that deletes ``path``'s
    target in lower layers). Raises UsageError for a bad index, ArchiveError for a corrupt layer.
    """
    desc = _layer(image, index)
    with open_layer(image, cache, desc) as raw:
        try:
            with stream_tar(raw) as tf:
                for m in entries_of(tf):
                    path = m.name[2:] if m.name.startswith("./") else m.name.lstrip("/")
                    path = path.rstrip("/")
                    kind = TAR_TYPES.get(m.type, "other")
                    if path.rsplit("/", 1)[-1].startswith(".wh."):
                        kind = "whiteout"
                    yield {"path": path, "type": kind, "size": m.size if m.isreg() else 0,
                           "mode": stat.S_IMODE(m.mode), "uid": m.uid, "gid": m.gid,
                           "linkname": m.linkname or None}
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise ArchiveError(f"layer {index} ({desc.digest}) is not a readable tar: {exc}") from None


def render_image(doc: dict[str, Any]) -> str:
    """The human table ``inspect`` prints (what ``--json`` gives, minus nothing important)."""
    from ..sizes import human_size

    cfg = doc["config"]
    plat = doc["platform"]
    platform = "/".join(p for p in (plat["os"], plat["architecture"], plat["variant"]) if p)
    lines = [
        f"Name:       {doc['name']}",
        f"Digest:     {doc['digest']}",
        f"MediaType:  {doc['mediaType']}",
        f"Platform:   {platform}",
        f"Created:    {doc['created'] or ''}",
        f"Config:     {cfg['digest']}",
        f"Cmd:        {json.dumps(cfg['cmd'])}",
        f"Entrypoint: {json.dumps(cfg['entrypoint'])}",
        f"WorkingDir: {cfg['workingDir'] or ''}",
        f"User:       {cfg['user'] or ''}",
        f"Ports:      {' '.join(cfg['exposedPorts'])}",
        "Env:",
    ]
    lines += [f"  {e}" for e in cfg["env"]]
    lines.append("Labels:")
    lines += [f"  {k}={v}" for k, v in sorted(cfg["labels"].items())]
    lines.append(f"Layers ({len(doc['layers'])}, {human_size(doc['totalSize'])}):")
    lines.append(f"  {'#':>2}  {'DIGEST':<19}  {'SIZE':>10}  {'TYPE':<8}  CREATED BY")
    for layer in doc["layers"]:
        media = SHORT_MEDIA.get(MediaType.to_oci(layer["mediaType"]), "other")
        lines.append(f"  {layer['index']:>2}  {layer['digest'][:19]}  {human_size(layer['size']):>10}  "
                     f"{media:<8}  {layer['createdBy']}")
    return "\n".join(lines)


def render_entry(entry: dict[str, Any]) -> str:
    """One ``tar tv``-style line: mode, owner, size, path (-> link target)."""
    kind_bits = {"dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "chr": stat.S_IFCHR, "blk": stat.S_IFBLK,
                 "fifo": stat.S_IFIFO}.get(entry["type"], stat.S_IFREG)
    mode = stat.filemode(kind_bits | entry["mode"])
    target = ""
    if entry["type"] == "symlink":
        target = f" -> {entry['linkname']}"
    elif entry["type"] == "hardlink":
        target = f" link to {entry['linkname']}"
    return f"{mode} {entry['uid']}/{entry['gid']} {entry['size']:>12} {entry['path']}{target}"
