"""Unpacking an image's layers into a root filesystem directory, refusing anything unsafe.

Rules (what ``ociassemble run`` relies on; each refusal is an ``ArchiveError`` naming
the layer digest and the entry):

* Names (``tarcheck.entry_parts``, the rule a base tarball is checked by too): an
  absolute name (entry or whiteout), a ``..`` component, a NUL byte or a component
  longer than 255 bytes is refused; an image carrying one is malformed.
* Parents: every parent component is opened one at a time from the root with
  ``O_NOFOLLOW``; a parent that is a symlink (placed by this or an earlier layer)
  is refused, so nothing is ever written through a symlink. Missing parents are
  created (0755, root).
* The last component is replaced, never followed: an existing file or symlink is
  unlinked first and files are created with ``O_CREAT|O_EXCL|O_NOFOLLOW``; an
  existing directory is kept (merged) only when the entry is a directory too, as
  containerd does.
* Symlinks: a relative target that climbs above the root (``a/b -> ../../x``
  lexically) is refused; absolute targets are in-image paths and are kept.
* Hard links: the target (a relative name, as entries are) must already exist
  inside the root (this or a lower layer), reached without symlinks, and must not
  be a directory.
* Whiteouts (OCI image spec, "Representing Changes"): ``D/.wh.NAME`` removes
  ``D/NAME`` from the lower layers, ``D/.wh..wh..opq`` removes every lower entry
  of ``D``; entries of the same layer are kept whatever the order in the tar.
  Removal never follows symlinks.
* Special files: device nodes are skipped (``run`` gives ``/dev`` its own tmpfs),
  set-user-ID and set-group-ID bits are cleared; xattrs are not applied. Owners
  are kept when running as root.
* Limits (``UnpackLimits``) bound the file bytes, the entry count and the size of a
  single tar metadata header per image, against tar and gzip bombs.
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
import io
import logging
import os
import shutil
import stat
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import zstandard
from isal import igzip_threaded, isal_zlib

from ..errors import ArchiveError, OciAssembleError
from ..image.assemble import Image
from ..image.cache import BlobCache, DiskFullError
from ..image.digest import CHUNK, Digest, VerifyingReader
from ..image.oci import Descriptor, MediaType
from ..image.tarcheck import UnsafeEntry, entry_parts, symlink_leaves_root

__all__ = ["UnpackLimits", "DEFAULT_LIMITS", "unpack_image", "unpack_layers", "rootfs_path", "chain_id"]

log = logging.getLogger(__name__)

_GIB = 1 << 30


@dataclass(frozen=True)
class UnpackLimits:
    """Per-image bounds on what unpacking may write; exceeding one is an ``ArchiveError``."""

    #: Total bytes of regular-file content over all layers. 1 TiB: above any model
    #: that fits a serving VM's disk, far below what a gzip bomb can claim.
    max_bytes: int = 1024 * _GIB
    #: Total tar entries over all layers (a Debian base has ~10k, a big Python
    #: environment ~200k); bounds inode exhaustion by empty files or links.
    max_entries: int = 10_000_000
    #: One PAX/GNU long-name header: tarfile reads it into memory whole, so a
    #: claimed size of gigabytes would be a memory bomb. Real ones are < 64 KiB.
    max_header_bytes: int = 1 << 20


DEFAULT_LIMITS = UnpackLimits()

_WH = ".wh."
_OPAQUE = ".wh..wh..opq"
#: Any entry name whose last component starts with this is AUFS metadata (``.wh..wh.plnk``…).
_WH_META = ".wh..wh."
_SUGID = stat.S_ISUID | stat.S_ISGID
#: What a truncated or corrupt compressed stream raises (the codecs share no base class).
_CODEC_ERRORS = (EOFError, OSError, ValueError, zlib.error, isal_zlib.error, zstandard.ZstdError)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Unsafe(Exception):
    """An entry is refused; turned into an ArchiveError naming layer and entry."""


class _Missing(Exception):
    """A parent directory does not exist (and was not to be created)."""


class _Corrupt(Exception):
    """The layer's byte stream cannot be decompressed or parsed."""


def _limited_tarinfo(max_header: int) -> type[tarfile.TarInfo]:
    """A TarInfo that refuses oversized PAX and GNU long-name headers before reading them."""

    class LimitedTarInfo(tarfile.TarInfo):
        def _proc_pax(self, tf):  # type: ignore[no-untyped-def]
            if self.size > max_header:
                raise _Unsafe(f"a PAX header of {self.size} bytes exceeds the {max_header}-byte limit")
            return super()._proc_pax(tf)  # type: ignore[misc]

        def _proc_gnulong(self, tf):  # type: ignore[no-untyped-def]
            if self.size > max_header:
                raise _Unsafe(f"a GNU long-name header of {self.size} bytes exceeds the {max_header}-byte limit")
            return super()._proc_gnulong(tf)  # type: ignore[misc]

    return LimitedTarInfo


class _Reader:
    """Wraps a decompressed stream: hashes (diff_id) and turns codec errors into ``_Corrupt``."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._raw.read(n)
        except OciAssembleError:
            raise
        except _CODEC_ERRORS as exc:
            raise _Corrupt(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
        self.hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


class _RawIO(io.RawIOBase):
    """The ``readinto`` face the gzip reader needs, over a ``VerifyingReader``."""

    def __init__(self, raw: VerifyingReader) -> None:
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        data = self._raw.read(len(b))
        b[: len(data)] = data
        return len(data)


def _decompressed(raw: VerifyingReader, media_type: str) -> BinaryIO:
    if media_type == MediaType.LAYER_GZIP:
        return igzip_threaded.open(_RawIO(raw), "rb")  # type: ignore[return-value]
    if media_type == MediaType.LAYER_ZSTD:
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)  # type: ignore[return-value]
    if media_type == MediaType.LAYER_TAR:
        return raw  # type: ignore[return-value]
    raise ArchiveError(f"layer media type {media_type!r} cannot be unpacked: expected a tar, tar+gzip or tar+zstd layer")


def _clean(name: str) -> list[str]:
    """The components of an entry name inside the root (``[]`` is the root itself)."""
    try:
        return entry_parts(name)
    except UnsafeEntry as exc:
        raise _Unsafe(str(exc)) from None


@dataclass
class _Budget:
    limits: UnpackLimits
    bytes: int = 0
    entries: int = 0


@dataclass
class _Layer:
    """Unpacking one layer into the root: parent handling, whiteouts and bookkeeping."""

    root_fd: int
    root: Path
    budget: _Budget
    owners: bool
    written: set[str] = field(default_factory=set)
    holders: set[str] = field(default_factory=set)  # parents of written paths
    skipped: list[str] = field(default_factory=list)
    _cached: tuple[tuple[str, ...], int] | None = None

    # -- parents -----------------------------------------------------------
    def close(self) -> None:
        self._forget()

    def _forget(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def parent_fd(self, parts: Sequence[str], create: bool = True) -> int:
        """An fd of the directory holding ``parts[-1]``, walked without following symlinks.

        The fd belongs to this object (do not close it); it stays valid until the next
        call or removal.
        """
        key = tuple(parts[:-1])
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        self._forget()
        fd = os.dup(self.root_fd)
        try:
            for i, comp in enumerate(key):
                try:
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise _Missing("/".join(key[: i + 1])) from None
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    where = "/".join(key[: i + 1])
                    st = os.lstat(comp, dir_fd=fd)
                    if stat.S_ISLNK(st.st_mode):
                        raise _Unsafe(f"its parent '{where}' is a symlink, which is never written through") from None
                    raise _Unsafe(f"its parent '{where}' is not a directory") from None
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        self._cached = (key, fd)
        return fd

    def note_written(self, parts: Sequence[str]) -> None:
        self.written.add("/".join(parts))
        for i in range(1, len(parts)):
            self.holders.add("/".join(parts[:i]))

    # -- removal -------------------------------------------------------------
    def _remove(self, dfd: int, name: str) -> None:
        """Remove ``name`` in ``dfd`` (a whole tree for a directory), never following symlinks.

        ``dfd`` is always the cached parent or below it, so the cached fd stays valid.
        """
        st = os.lstat(name, dir_fd=dfd)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=dfd)
        else:
            os.unlink(name, dir_fd=dfd)

    def remove_lower(self, dfd: int, name: str, rel: str) -> None:
        """Remove what lower layers put at ``rel``, keeping what this layer wrote."""
        try:
            st = os.lstat(name, dir_fd=dfd)
        except FileNotFoundError:
            return
        if rel not in self.written and rel not in self.holders:
            self._remove(dfd, name)
            return
        if stat.S_ISDIR(st.st_mode):
            self.remove_lower_children(dfd, name, rel)

    def remove_lower_children(self, dfd: int, name: str, rel: str) -> None:
        sub = os.open(name, _DIR_FLAGS, dir_fd=dfd) if name else os.dup(dfd)
        try:
            for child in sorted(os.listdir(sub)):
                self.remove_lower(sub, child, f"{rel}/{child}" if rel else child)
        finally:
            os.close(sub)

    def clear(self, dfd: int, name: str, keep_dir: bool) -> bool:
        """Make room for a new entry at ``name``; True if an existing directory is kept."""
        try:
            st = os.lstat(name, dir_fd=dfd)
        except FileNotFoundError:
            return False
        if keep_dir and stat.S_ISDIR(st.st_mode):
            return True
        self._remove(dfd, name)
        return False

    # -- entries -------------------------------------------------------------
    def apply(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        b = self.budget
        b.entries += 1
        if b.entries > b.limits.max_entries:
            raise _Unsafe(f"the image has more than {b.limits.max_entries} entries (the entry limit)")
        parts = _clean(m.name)
        if not parts:
            return  # the root itself: its mode and owner stay as created
        base = parts[-1]
        rel = "/".join(parts)
        if base.startswith(_WH):
            self._whiteout(parts, base)
            return
        if m.ischr() or m.isblk():
            self.skipped.append("/" + rel)
            return
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk() or m.isfifo()):
            raise _Unsafe(f"unsupported tar entry type {m.type!r}")
        dfd = self.parent_fd(parts)
        if m.isdir():
            if not self.clear(dfd, base, keep_dir=True):
                os.mkdir(base, 0o700, dir_fd=dfd)
            fd = os.open(base, _DIR_FLAGS, dir_fd=dfd)
            try:
                self._meta(fd, m)
            finally:
                os.close(fd)
        elif m.isreg():
            self._file(tf, m, dfd, base)
        elif m.issym():
            self._symlink(m, dfd, base, rel)
        elif m.islnk():
            self._hardlink(m, dfd, base, parts)
        else:
            self.clear(dfd, base, keep_dir=False)
            os.mkfifo(base, 0o600, dir_fd=dfd)
            fd = os.open(base, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            try:
                self._meta(fd, m)
            finally:
                os.close(fd)
        self.note_written(parts)

    def _meta(self, fd: int, m: tarfile.TarInfo) -> None:
        if self.owners:
            os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, m.mode & 0o7777 & ~_SUGID)

    def _whiteout(self, parts: list[str], base: str) -> None:
        if base == _OPAQUE:
            dfd = self.parent_fd(parts)
            self.remove_lower_children(dfd, "", "/".join(parts[:-1]))
            return
        if base.startswith(_WH_META):
            return  # AUFS bookkeeping (hard-link dirs): nothing to apply
        target = base[len(_WH):]
        if target in ("", ".", ".."):
            raise _Unsafe(f"whiteout of {target!r} names no entry")
        try:
            dfd = self.parent_fd(parts, create=False)
        except _Missing:
            return  # nothing below to hide
        self.remove_lower(dfd, target, "/".join([*parts[:-1], target]))

    def _file(self, tf: tarfile.TarFile, m: tarfile.TarInfo, dfd: int, base: str) -> None:
        b = self.budget
        if b.bytes + m.size > b.limits.max_bytes:
            raise _Unsafe(f"the image's files exceed {b.limits.max_bytes} bytes (the size limit)")
        b.bytes += m.size
        if m.size > 64 << 20:
            vfs = os.statvfs(dfd)
            if vfs.f_bavail * vfs.f_frsize < m.size:
                raise DiskFullError(f"no space for {m.size} bytes under {self.root}: free some space or move the cache with --cache-dir")
        self.clear(dfd, base, keep_dir=False)
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            src = tf.extractfile(m)
            assert src is not None
            remaining = m.size
            while remaining:
                data = src.read(min(CHUNK, remaining))
                if not data:
                    raise _Corrupt("unexpected end of data")
                remaining -= len(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            self._meta(fd, m)
            os.utime(fd, ns=(int(m.mtime) * 10**9, int(m.mtime) * 10**9))
        finally:
            os.close(fd)

    def _symlink(self, m: tarfile.TarInfo, dfd: int, base: str, rel: str) -> None:
        target = m.linkname
        if not target or "\0" in target:
            raise _Unsafe("a symlink with an empty or NUL-bearing target")
        if symlink_leaves_root(rel, target):
            raise _Unsafe(f"symlink to {target!r} leads outside the root")
        self.clear(dfd, base, keep_dir=False)
        os.symlink(target, base, dir_fd=dfd)
        if self.owners:
            os.chown(base, m.uid, m.gid, dir_fd=dfd, follow_symlinks=False)

    def _hardlink(self, m: tarfile.TarInfo, dfd: int, base: str, parts: list[str]) -> None:
        try:
            tparts = _clean(m.linkname)
        except _Unsafe as exc:
            raise _Unsafe(f"hard link to {m.linkname!r}: {exc}") from None
        if not tparts:
            raise _Unsafe("hard link to the root directory")
        if tparts == parts:
            return
        # Resolve the target's parent first: parent_fd caches one directory at a time.
        try:
            tfd = os.dup(self.parent_fd(tparts, create=False))
        except _Missing:
            raise _Unsafe(f"hard link to {m.linkname!r}, which is not already inside the root") from None
        try:
            try:
                st = os.lstat(tparts[-1], dir_fd=tfd)
            except FileNotFoundError:
                raise _Unsafe(f"hard link to {m.linkname!r}, which is not already inside the root") from None
            if stat.S_ISDIR(st.st_mode):
                raise _Unsafe(f"hard link to directory {m.linkname!r}")
            dfd = self.parent_fd(parts)
            self.clear(dfd, base, keep_dir=False)
            dfd = self.parent_fd(parts)
            os.link(tparts[-1], base, src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)
        finally:
            os.close(tfd)


def _unpack_one(cache: BlobCache, desc: Descriptor, diff_id: str | None, root: Path, budget: _Budget) -> None:
    where = f"layer {desc.digest}"
    owners = os.geteuid() == 0
    with cache.open(desc.digest) as f:
        raw = VerifyingReader(f, Digest(desc.digest), desc.size, where)  # type: ignore[arg-type]
        stream = _decompressed(raw, desc.media_type)
        reader = _Reader(stream)
        root_fd = os.open(root, _DIR_FLAGS)
        layer = _Layer(root_fd, root, budget, owners)
        at = "the first entry"
        try:
            tf = tarfile.open(fileobj=reader, mode="r|", tarinfo=_limited_tarinfo(budget.limits.max_header_bytes))  # type: ignore[call-overload]
            for m in tf:
                at = f"entry {m.name!r}"
                layer.apply(tf, m)
                at = f"the header after entry {m.name!r}"
            at = "the end of the archive"
            reader.drain()
            while raw.read(CHUNK):
                pass
            raw.verify()
        except _Unsafe as exc:
            raise ArchiveError(f"{where}: {at}: {exc}; refusing to unpack an unsafe image") from None
        except _Corrupt as exc:
            raise ArchiveError(f"{where} is truncated or corrupt at {at} ({exc}); pull or rebuild the image") from None
        except tarfile.TarError as exc:
            raise ArchiveError(f"{where} is not a valid tar stream at {at} ({exc}); pull or rebuild the image") from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"no space left unpacking {where} into {root}: free some space or move the cache with --cache-dir") from None
            raise ArchiveError(f"{where}: {at} cannot be written under {root}: {exc.strerror or exc}") from None
        finally:
            layer.close()
            os.close(root_fd)
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
    budget = _Budget(limits)
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
