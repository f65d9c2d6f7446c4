"""OCI image layouts on disk (``oci:DIR[:TAG]``): written atomically, read with verification.

The writer follows the same order as a push: blobs first, ``index.json`` last, all in
a temp directory renamed into place, so an interrupted write leaves no layout that
names a missing blob.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import os
import shutil
import stat
import tempfile
from dataclasses import replace
from pathlib import Path

from ..errors import ArchiveError, InputError
from ..image.blobref import RefRecord, stamp_of
from ..image.cache import BlobCache
from ..image.diffid import HeldIn, StagedBlob, stage_layer
from ..image.digest import Digest
from ..image.imageindex import ImageIndex, Target
from ..image.oci import MANIFEST_MAX, Descriptor, Index, MediaType, Platform, canonical_json
from ..image.resolve import check_size, load_index, resolve_image

__all__ = ["write_layout", "read_layout", "select_manifest", "REF_NAME", "replace_path", "temp_sibling",
           "documents", "top_descriptor"]

REF_NAME = "org.opencontainers.image.ref.name"
_LAYOUT = canonical_json({"imageLayoutVersion": "1.0.0"})


def temp_sibling(target: Path, directory: bool) -> Path:
    """A fresh temp path next to ``target`` (same filesystem, so rename is atomic).

    Its name carries our pid (``.<name>.tmp-<pid>-…``), so the temps a killed run left
    beside the same target are recognised and removed here; a live process's are kept.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    for stale in target.parent.glob(glob.escape(prefix) + "*"):
        pid = stale.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
    mine = f"{prefix}{os.getpid()}-"
    if directory:
        return Path(tempfile.mkdtemp(dir=target.parent, prefix=mine))
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=mine)
    os.close(fd)
    return Path(name)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, f"cannot replace {b}: {os.strerror(err)}")


def replace_path(tmp: Path, target: Path) -> None:
    """Move a finished output into place, replacing what was there.

    A directory is swapped in one step (RENAME_EXCHANGE), so no moment exists without
    an output at ``target``; the old one is then removed from where ``tmp`` was.
    """
    if target.is_dir() and not target.is_symlink():
        if _exchange(tmp, target):
            shutil.rmtree(tmp, ignore_errors=True)
            return
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-{os.getpid()}-old-"))
        os.rename(target, old / "x")
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _put_blob(cache: BlobCache, digest: str, size: int, dst: Path, previous: Path) -> None:
    """A blob into the layout: linked from the cache, or, held by reference (an uncompressed
    layer of the user's files), written once from its files, here only: never also into the
    cache. Where the filesystem has reflinks the big files' data is not even written but
    shared with the user's files (``clone``: the layer format aligns it for that). A rewrite
    of the same layout links the copy its previous version holds (``previous``: the layout
    being replaced), so an unchanged rebuild writes nothing again."""
    if cache.stored(digest):
        _link_or_copy(cache.path(digest), dst)
        return
    ref = cache.ref(digest)
    old = previous / "blobs" / "sha256" / Digest(digest).hex
    try:
        st = os.lstat(old)
        if stat.S_ISREG(st.st_mode) and st.st_size == size and ref is not None \
                and ref.fresh() and st.st_mtime_ns >= max((p.stamp[0] for p in ref.files), default=0):
            os.link(old, dst)  # written from these very files, after their last change
            return
    except OSError:
        pass
    if ref is None:
        raise ArchiveError(f"blob {digest} is not in the cache at {cache.root}: rebuild, or pull the image again")
    if _link_held(cache, ref, dst):
        return
    from .clone import write_record

    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        write_record(ref, fd)
    finally:
        os.close(fd)


def _link_held(cache: BlobCache, ref: RefRecord, dst: Path) -> bool:
    """A blob held by reference to one whole file (another layout's, ``read_layout``), linked
    from it as a cached blob would be. The link moves that file's ctime, which would make
    the record look stale: it is written again with the file as it is now."""
    files = ref.files
    if len(files) != 1 or not files[0].whole or files[0].size != ref.size or files[0].sha256 != Digest(ref.digest).hex \
            or not ref.fresh():
        return False
    try:
        os.link(files[0].path, dst)
        now = os.stat(dst)
    except OSError:
        return False
    if now.st_ino == files[0].stamp[2] and now.st_mtime_ns == files[0].stamp[0]:
        cache.put_ref(RefRecord.build(ref.digest, [replace(files[0], stamp=stamp_of(now))]))
    return True


def documents(target: Target) -> dict[str, bytes]:
    """The JSON documents a layout or archive of ``target`` holds besides the configs and
    layers: each image's manifest, and the index of a multi-platform image."""
    if isinstance(target, ImageIndex):
        docs = {image.digest: image.manifest_bytes for image in target.images}
        docs[target.digest] = target.index_bytes
        return docs
    return {target.digest: target.manifest_bytes}


def top_descriptor(target: Target, tag: str | None) -> Descriptor:
    """The one entry of the ``index.json`` written for ``target``: its manifest, or its index
    (nested, as ``docker buildx --output type=oci`` writes it, so the index digest is the
    one a push gives), tagged ``tag``."""
    ann = {REF_NAME: tag} if tag else None
    if isinstance(target, ImageIndex):
        return Descriptor(MediaType.INDEX, target.digest, len(target.index_bytes), annotations=ann)
    return Descriptor(target.manifest.media_type, target.digest, len(target.manifest_bytes), annotations=ann)


def write_layout(target: Target, cache: BlobCache, path: Path, tag: str | None = None) -> None:
    """Write ``target`` (an image, or an index of several) as an OCI layout at ``path``
    (replacing it), tagged ``tag`` if given. A blob shared by several platforms' images is
    written once."""
    target.ensure_blobs(cache)
    tmp = temp_sibling(path, directory=True)
    try:
        blobs = tmp / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        for d in target.blobs():
            _put_blob(cache, d.digest, d.size, blobs / Digest(d.digest).hex, path)
        for digest, data in documents(target).items():
            (blobs / Digest(digest).hex).write_bytes(data)
        (tmp / "oci-layout").write_bytes(_LAYOUT)
        (tmp / "index.json").write_bytes(Index((top_descriptor(target, tag),)).to_bytes())
        replace_path(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def select_manifest(index: Index, tag: str | None, where: str) -> Descriptor:
    """The manifest an ``index.json`` names for ``tag`` (or its only one)."""
    manifests = [m for m in index.manifests if m.media_type in MediaType.MANIFESTS or not m.media_type]
    if tag:
        hits = [m for m in index.manifests if (m.annotations or {}).get(REF_NAME) == tag]
        if not hits:
            names = sorted({(m.annotations or {}).get(REF_NAME, "") for m in index.manifests} - {""})
            raise InputError(f"{where} has no image tagged {tag!r}" + (f"; it has {', '.join(names)}" if names else ""))
        return hits[0]
    if len(index.manifests) == 1:
        return index.manifests[0]
    if not manifests:
        raise ArchiveError(f"{where} holds no image manifest")
    raise InputError(f"{where} holds {len(index.manifests)} images; name one with :TAG")


_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: O_NONBLOCK: a FIFO planted as a blob must not hang the read; it is refused as not regular.
_NOFOLLOW_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_in_layout(root: Path, parts: tuple[str, ...], where: str, what: str):  # type: ignore[no-untyped-def]
    """A regular file inside the layout at ``root``, opened without following any symlink.

    Each component is opened from the layout's folder with ``O_NOFOLLOW``: a blob (or
    the ``blobs`` folder) that is a symlink could name any file on this machine, whose
    content would then go into the image and wherever it is pushed.

    Raises ArchiveError for a symlink or a non-regular file, InputError for a file that
    cannot be read; FileNotFoundError if missing.
    """
    try:
        return _open_in_layout(root, parts, where, what)
    except PermissionError:
        raise InputError(f"{where}: {what} ({'/'.join(parts)}) cannot be read: permission denied; "
                         "make the layout readable") from None


def _open_in_layout(root: Path, parts: tuple[str, ...], where: str, what: str):  # type: ignore[no-untyped-def]
    fd = os.open(root, _NOFOLLOW_DIR & ~os.O_NOFOLLOW)  # the layout folder itself is the user's choice
    try:
        for i, comp in enumerate(parts):
            last = i == len(parts) - 1
            try:
                nfd = os.open(comp, _NOFOLLOW_FILE if last else _NOFOLLOW_DIR, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                rel = "/".join(parts[: i + 1])
                raise ArchiveError(_not_regular(where, what, rel, os.lstat(comp, dir_fd=fd).st_mode)) from None
            os.close(fd)
            fd = nfd
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ArchiveError(_not_regular(where, what, "/".join(parts), mode))
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return f


def _not_regular(where: str, what: str, rel: str, mode: int) -> str:
    kind = ("a symlink" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket")
    return (f"{where}: {what} ({rel}) is {kind}, not a regular file inside the layout: a link could copy "
            "any file of this machine into the image; re-create the layout (skopeo copy, ociassemble pull), "
            "or copy it with its links resolved (cp -rL) if the files they name are meant to be in it")


def read_layout(path: Path, tag: str | None, cache: BlobCache, *, verify_diff_ids: bool = True,
                platform: Platform | str | None = None, defer: bool = False) -> Target:
    """Read an image from an OCI layout, its layers verified and held in the cache by reference
    to the layout's files (``diffid.stage_layer``): a model's layer is not copied again.

    An index is resolved to ``platform`` (default: this machine's; ``"all"``: every image,
    as an ``ImageIndex``).

    Blobs and ``index.json`` must be regular files inside the layout (``open_in_layout``);
    with ``verify_diff_ids`` each layer is checked against its config's diff_id too. With
    ``defer`` (a push) an uncompressed layer the cache lacks is not read now: the registry
    checks it as it is sent (``diffid.stage_layer``).
    """
    where = f"OCI layout {path}"
    if not (path / "index.json").exists() and not (path / "index.json").is_symlink():
        raise InputError(f"{path} is not an OCI layout (no index.json); give a directory written by ociassemble, skopeo or umoci")

    def open_blob(d: Descriptor):  # type: ignore[no-untyped-def]
        algo, _, hexd = d.digest.partition(":")
        try:
            return open_in_layout(path, ("blobs", algo, hexd), where, f"blob {d.digest}")
        except FileNotFoundError:
            raise ArchiveError(f"{where} is missing blob {d.digest}") from None

    def read_blob(d: Descriptor) -> bytes:
        with open_blob(d) as f:
            return f.read(d.size + 1)  # checked against its digest by resolve_image

    def ingest(d: Descriptor, diff_id: str) -> StagedBlob:
        algo, _, hexd = d.digest.partition(":")
        with open_blob(d) as f:  # held where it is: the layout's file, not a copy of it
            return stage_layer(cache, f, d, diff_id if verify_diff_ids else None, where,
                               held=HeldIn(path / "blobs" / algo / hexd, f.fileno()), defer=defer)

    try:
        with open_in_layout(path, ("index.json",), where, "index.json") as f:
            check_size(os.fstat(f.fileno()).st_size, MANIFEST_MAX, "index.json", where)
            index_bytes = f.read(MANIFEST_MAX + 1)
        check_size(len(index_bytes), MANIFEST_MAX, "index.json", where)  # (it grew while read)
    except FileNotFoundError:
        raise InputError(f"{path} is not an OCI layout (no index.json); give a directory written by ociassemble, skopeo or umoci") from None
    index = load_index(index_bytes, where)
    return resolve_image(read_blob, select_manifest(index, tag, where), where, ingest, platform)
