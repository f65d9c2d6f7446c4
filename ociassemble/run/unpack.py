"""Unpacking an image's layers into a root filesystem directory, refusing anything unsafe.

Each layer is read as a verified tar stream (``stream``), each entry checked from its
header (``entries``: names, link targets, whiteout names, types, limits) and written
without following a symlink (``writer``: parents, replacement, hard-link targets,
whiteouts). Each refusal is an ``ArchiveError`` naming the layer digest and the entry.

* Integrity: the compressed stream is checked against the layer digest and the
  tar stream against the diff_id while it is read; a truncated or corrupt stream
  is refused.

Unpacked images are cached under ``<cache root>/rootfs/sha256/<ChainID hex>/`` (the
OCI ChainID of the layers, so images differing only in config share one rootfs), or
``<cache root>/rootfs/<id map>/sha256/<ChainID hex>/`` when unpacked for a run's user
namespace (``idmap``: the files belong to the image's ids as the host numbers them),
unpacked into a temp directory beside it and renamed only when complete, so an
interrupted unpack is never reused (its leftovers are removed by the next unpack).
Every folder from ``rootfs`` down to the ``sha256`` holding the rootfs is 0700 and must be
ours: no other user of a shared ``--cache-dir`` can plant or change a file in an image
root may run.

For a run by root the files are chowned into the map's host range as they are written;
for a run by another user, who cannot chown, the unpacker itself runs as root of a user
namespace with the run's map (``python -m ociassemble.run.unpack``), where ``chown`` to
the image's ids lands on the user's subordinate ids.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import subprocess
import sys
import tarfile
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import ArchiveError, DiskFullError, OciAssembleError, RunError
from ..image.assemble import Image
from ..image.cache import BlobCache
from ..image.digest import CHUNK, Digest, VerifyingReader
from ..image.oci import Descriptor
from .entries import DEFAULT_LIMITS, Budget, EntryRefused, UnpackLimits, check_entry, limited_tarinfo
from .stream import CorruptStream, TarStream, decompressed
from .idmap import IdMap
from .userns import NO_ROOTFS, remove_tree, start_in_userns
from .writer import LayerWriter, Owners, ParentDirs

__all__ = ["UnpackLimits", "DEFAULT_LIMITS", "unpack_image", "unpack_layers", "rootfs_path", "chain_id"]

log = logging.getLogger(__name__)

def _as_is(uid: int, gid: int) -> tuple[int, int]:
    return uid, gid


def _unpack_one(cache: BlobCache, desc: Descriptor, diff_id: str | None, root: Path, budget: Budget,
                owners: Owners | None) -> None:
    where = f"layer {desc.digest}"
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
                  diff_ids: Sequence[str] | None = None, limits: UnpackLimits = DEFAULT_LIMITS,
                  owners: Owners | None = None) -> None:
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
    if owners is None and os.geteuid() == 0:
        owners = _as_is
    for i, desc in enumerate(layers):
        _unpack_one(cache, desc, diff_ids[i] if diff_ids is not None else None, root, budget, owners)


def chain_id(diff_ids: Sequence[str]) -> str:
    """The OCI ChainID of a layer stack: names the filesystem the layers make, whatever the config."""
    chain = ""
    for diff_id in diff_ids:
        chain = diff_id if not chain else "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
    return chain or "sha256:" + hashlib.sha256(b"").hexdigest()


def rootfs_path(cache: BlobCache, image: Image, idmap: IdMap | None = None) -> Path:
    """Where ``image``'s unpacked root filesystem is cached (it may not exist yet), for ``idmap``'s run.

    Keyed by the layers' ChainID rather than the manifest digest: images that differ
    only in config (Cmd, Env, labels) share one unpacked rootfs.
    """
    top = cache.root / "rootfs" if idmap is None else cache.root / "rootfs" / idmap.key
    return top / "sha256" / Digest(chain_id(image.config.diff_ids)).hex


def private_dir(path: Path) -> None:
    """Make ``path`` (if missing) a 0700 folder of ours; RunError if another user owns it or it is a link."""
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise RunError(f"cannot create {path}: {exc.strerror}") from None
    if not os.path.isdir(path) or os.path.islink(path):
        raise RunError(f"{path} is not a folder: remove it, or use another --cache-dir")
    if st.st_uid != os.geteuid():
        raise RunError(f"{path} belongs to uid {st.st_uid}, not to us: another user could plant files in the "
                       f"images we run; use a --cache-dir of your own")
    if st.st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)


def _shifted(idmap: IdMap) -> Owners:
    """Entry ids to the host ids of ``idmap`` (an id it leaves out becomes the image's root)."""
    root_uid, root_gid = idmap.host_uid(0), idmap.host_gid(0)
    assert root_uid is not None and root_gid is not None

    def owners(uid: int, gid: int) -> tuple[int, int]:
        u, g = idmap.host_uid(uid), idmap.host_gid(gid)
        return (root_uid if u is None else u), (root_gid if g is None else g)
    return owners


def _unpack_in_userns(image: Image, cache: BlobCache, tmp: Path, limits: UnpackLimits, idmap: IdMap) -> None:
    """Unpack as root of a user namespace mapped by ``idmap`` (see the module docstring)."""
    request = {"cache": str(cache.root), "root": str(tmp), "limits": asdict(limits),
               "layers": [d.to_json() for d in image.manifest.layers], "diff_ids": list(image.config.diff_ids)}
    package_parent = str(Path(__file__).resolve().parents[2])
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
    proc = start_in_userns(idmap, NO_ROOTFS, [sys.executable, "-m", "ociassemble.run.unpack"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    out, _ = proc.communicate(json.dumps(request).encode())
    if proc.returncode == 0:
        return
    try:
        answer = json.loads(out)
    except ValueError:
        raise ArchiveError(f"unpacking {image.digest} in the run's user namespace failed (status {proc.returncode}); "
                           f"see the message above") from None
    kind = DiskFullError if answer.get("error") == "DiskFullError" else ArchiveError
    raise kind(str(answer.get("message")))


def _stale_temps(parent: Path) -> Iterator[Path]:
    """Temp dirs of unpacks whose process is gone (their name carries the pid)."""
    for p in parent.glob(".tmp-*"):
        try:
            pid = int(p.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if not Path(f"/proc/{pid}").exists():
            yield p


def unpack_image(image: Image, cache: BlobCache, *, limits: UnpackLimits = DEFAULT_LIMITS,
                 idmap: IdMap | None = None) -> Path:
    """The image's root filesystem, unpacked once into the cache and reused after.

    Example::

        rootfs = unpack_image(load_image("oci:out:latest", cache), cache)

    Layers not yet in the cache are fetched first (a lazily pulled base). Treat the
    returned directory as read-only: ``run`` gives each run its own writable copy.
    With ``idmap``, its files belong to the image's ids as that run's user namespace maps
    them (see the module docstring).

    Raises ArchiveError (see ``unpack_layers``), DiskFullError, RunError (a cache folder
    that is not ours, a user namespace that cannot be made).
    """
    final = rootfs_path(cache, image, idmap)
    parent = final.parent
    folder = cache.root / "rootfs"
    private_dir(folder)
    for part in parent.relative_to(folder).parts:
        folder = folder / part
        private_dir(folder)
    if final.is_dir():
        return final
    image.ensure_blobs(cache)
    for stale in _stale_temps(parent):
        remove_tree(stale, idmap)
    tmp = parent / f".tmp-{final.name[:16]}-{os.getpid()}-{os.urandom(4).hex()}"
    tmp.mkdir(mode=0o755)
    try:
        if idmap is None:
            unpack_layers(cache, image.manifest.layers, tmp, diff_ids=image.config.diff_ids, limits=limits)
        elif idmap.privileged:
            owners = _shifted(idmap)
            os.chown(tmp, *owners(0, 0))
            unpack_layers(cache, image.manifest.layers, tmp, diff_ids=image.config.diff_ids, limits=limits,
                          owners=owners)
        else:
            _unpack_in_userns(image, cache, tmp, limits, idmap)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, final)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            remove_tree(tmp, idmap)  # another process finished the same unpack first
    except BaseException:
        remove_tree(tmp, idmap)
        raise
    return final


def _main() -> int:
    """The unpacker inside a run's user namespace: a JSON request on stdin, a JSON error on stdout."""
    request = json.load(sys.stdin)
    try:
        unpack_layers(BlobCache(Path(request["cache"])), [Descriptor.from_json(d) for d in request["layers"]],
                      Path(request["root"]), diff_ids=request["diff_ids"], limits=UnpackLimits(**request["limits"]))
    except OciAssembleError as exc:
        json.dump({"error": type(exc).__name__, "message": str(exc)}, sys.stdout)
        return 1
    except KeyboardInterrupt:  # Ctrl-C reached the whole process group: the parent reports it
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(_main())
