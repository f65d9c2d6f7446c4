"""Unpacking an image's layers into a root filesystem directory, refusing anything unsafe.

Each layer is read as a verified tar stream (``stream``), each entry checked from its
header (``entries``: names, link targets, whiteout names, types, limits) and written
without following a symlink (``writer``: parents, replacement, hard-link targets,
whiteouts). Each refusal is an ``ArchiveError`` naming the layer digest and the entry.

* Integrity: the compressed stream is checked against the layer digest and the
  tar stream against the diff_id while it is read; a truncated or corrupt stream
  is refused.

Unpacked images are cached under ``<cache root>/rootfs/sha256/<ChainID hex>/`` (the
OCI ChainID of the layers, so images differing only in config share one rootfs),
unpacked into a temp directory beside it and renamed only when complete, so an
interrupted unpack is never reused (its leftovers are removed by the next unpack).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import tarfile
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import ArchiveError
from ..image.assemble import Image
from ..image.cache import BlobCache, DiskFullError
from ..image.digest import CHUNK, Digest, VerifyingReader
from ..image.oci import Descriptor
from .entries import DEFAULT_LIMITS, Budget, EntryRefused, UnpackLimits, check_entry, limited_tarinfo
from .stream import CorruptStream, TarStream, decompressed
from .writer import LayerWriter, ParentDirs

__all__ = ["UnpackLimits", "DEFAULT_LIMITS", "unpack_image", "unpack_layers", "rootfs_path", "chain_id"]

log = logging.getLogger(__name__)

def _unpack_one(cache: BlobCache, desc: Descriptor, diff_id: str | None, root: Path, budget: Budget) -> None:
    where = f"layer {desc.digest}"
    owners = os.geteuid() == 0
    with cache.open(desc.digest) as f:
        raw = VerifyingReader(f, Digest(desc.digest), desc.size, where)  # type: ignore[arg-type]
        stream = decompressed(raw, desc.media_type)
        reader = TarStream(stream)
        parents = ParentDirs(root)
        layer = LayerWriter(parents, root, owners)
        at = "the first entry"
        try:
            tf = tarfile.open(fileobj=reader, mode="r|", tarinfo=limited_tarinfo(budget.limits.max_header_bytes))  # type: ignore[call-overload]
            for m in tf:
                at = f"entry {m.name!r}"
                entry = check_entry(m, budget)
                if entry is not None:
                    layer.write(tf, entry)
                at = f"the header after entry {m.name!r}"
            at = "the end of the archive"
            reader.drain()
            while raw.read(CHUNK):
                pass
            raw.verify()
        except EntryRefused as exc:
            raise ArchiveError(f"{where}: {at}: {exc}; refusing to unpack an unsafe image") from None
        except CorruptStream as exc:
            raise ArchiveError(f"{where} is truncated or corrupt at {at} ({exc}); pull or rebuild the image") from None
        except tarfile.TarError as exc:
            raise ArchiveError(f"{where} is not a valid tar stream at {at} ({exc}); pull or rebuild the image") from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"no space left unpacking {where} into {root}: free some space or move the cache with --cache-dir") from None
            raise ArchiveError(f"{where}: {at} cannot be written under {root}: {exc.strerror or exc}") from None
        finally:
            parents.close()
            if stream is not raw:
                stream.close()
    if diff_id is not None and "sha256:" + reader.hash.hexdigest() != diff_id:
        raise ArchiveError(f"{where} unpacks to a tar stream that does not match its diff_id {diff_id}: the image is corrupt; rebuild it")
    if layer.skipped:
        shown = ", ".join(layer.skipped[:5]) + (" …" if len(layer.skipped) > 5 else "")
        log.info("%s: skipped %d device entries (%s); run provides its own /dev", where, len(layer.skipped), shown)


def unpack_layers(cache: BlobCache, layers: Sequence[Descriptor], root: Path, *,
                  diff_ids: Sequence[str] | None = None, limits: UnpackLimits = DEFAULT_LIMITS) -> None:
    """Apply ``layers`` (bottom first) onto the existing directory ``root``.

    Example::

        unpack_layers(cache, image.manifest.layers, Path("rootfs"), diff_ids=image.config.diff_ids)

    The limits apply to all the layers together. On error, ``root`` is left partly
    written: unpack into a scratch directory (``unpack_image`` does).

    Raises ArchiveError for an unsafe entry, a corrupt or truncated layer, a digest or
    diff_id mismatch or an exceeded limit; DiskFullError when the disk fills.
    """
    if diff_ids is not None and len(diff_ids) != len(layers):
        raise ArchiveError(f"{len(layers)} layers but {len(diff_ids)} diff_ids: the image config does not match its manifest")
    budget = Budget(limits)
    for i, desc in enumerate(layers):
        _unpack_one(cache, desc, diff_ids[i] if diff_ids is not None else None, root, budget)


def chain_id(diff_ids: Sequence[str]) -> str:
    """The OCI ChainID of a layer stack: names the filesystem the layers make, whatever the config."""
    chain = ""
    for diff_id in diff_ids:
        chain = diff_id if not chain else "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
    return chain or "sha256:" + hashlib.sha256(b"").hexdigest()


def rootfs_path(cache: BlobCache, image: Image) -> Path:
    """Where ``image``'s unpacked root filesystem is cached (it may not exist yet).

    Keyed by the layers' ChainID rather than the manifest digest: images that differ
    only in config (Cmd, Env, labels) share one unpacked rootfs.
    """
    return cache.root / "rootfs" / "sha256" / Digest(chain_id(image.config.diff_ids)).hex


def _stale_temps(parent: Path) -> Iterator[Path]:
    """Temp dirs of unpacks whose process is gone (their name carries the pid)."""
    for p in parent.glob(".tmp-*"):
        try:
            pid = int(p.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if not Path(f"/proc/{pid}").exists():
            yield p


def unpack_image(image: Image, cache: BlobCache, *, limits: UnpackLimits = DEFAULT_LIMITS) -> Path:
    """The image's root filesystem, unpacked once into the cache and reused after.

    Example::

        rootfs = unpack_image(load_image("oci:out:latest", cache), cache)

    Layers not yet in the cache are fetched first (a lazily pulled base). Treat the
    returned directory as read-only: ``run`` gives each run its own writable copy.

    Raises ArchiveError (see ``unpack_layers``), DiskFullError.
    """
    final = rootfs_path(cache, image)
    if final.is_dir():
        return final
    image.ensure_blobs(cache)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in _stale_temps(parent):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = parent / f".tmp-{final.name[:16]}-{os.getpid()}-{os.urandom(4).hex()}"
    tmp.mkdir(mode=0o755)
    try:
        unpack_layers(cache, image.manifest.layers, tmp, diff_ids=image.config.diff_ids, limits=limits)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, final)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same unpack first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
