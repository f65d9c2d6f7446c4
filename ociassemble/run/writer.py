"""Writing a layer's checked entries into the root directory without ever following a symlink.

Rules (what ``ociassemble run`` relies on, beside the header checks of ``entries``):

* Parents: every parent component is opened one at a time from the root with
  ``O_NOFOLLOW``; a parent that is a symlink (placed by this or an earlier layer)
  is refused, so nothing is ever written through a symlink. Missing parents are
  created (0755, root).
* The last component is replaced, never followed: an existing file or symlink is
  unlinked first and files are created with ``O_CREAT|O_EXCL|O_NOFOLLOW``; an
  existing directory is kept (merged) only when the entry is a directory too, as
  containerd does.
* Hard links: the target must already exist inside the root (this or a lower
  layer), reached without symlinks, and must not be a directory.
* Whiteouts remove what lower layers put there; entries of the same layer are kept
  whatever the order in the tar. Removal never follows symlinks.
* Set-user-ID and set-group-ID bits are cleared; xattrs are not applied. Owners are
  kept when running as root.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import DiskFullError
from ..image.digest import CHUNK
from .entries import Entry, EntryRefused, Kind
from .stream import CorruptStream

__all__ = ["LayerWriter", "ParentDirs"]

_SUGID = stat.S_ISUID | stat.S_ISGID
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Above this size a file's room on the disk is checked before writing it, so a big
#: model fails with DiskFullError at once rather than after gigabytes.
_CHECK_SPACE_ABOVE = 64 << 20


#: Maps an entry's (uid, gid) to the ids to give the file (shifted into a run's id range).
Owners = Callable[[int, int], tuple[int, int]]


def _unmapped_ok(chown: Callable[[], None]) -> None:
    """Run ``chown``; an id our user namespace does not map (EINVAL) leaves the file its root's."""
    try:
        chown()
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise


class _MissingParent(Exception):
    """A parent directory does not exist (and was not to be created)."""


class ParentDirs:
    """Parent directories under the root, opened one component at a time without following symlinks.

    Holds the root's fd and one directory fd (the last one asked for), since entries
    of a tar come grouped by directory; ``close`` lets go of both.
    """

    def __init__(self, root: Path) -> None:
        self.root_fd = os.open(root, _DIR_FLAGS)
        self._cached: tuple[tuple[str, ...], int] | None = None

    def _forget(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def close(self) -> None:
        self._forget()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    def fd(self, parts: Sequence[str], create: bool = True) -> int:
        """An fd of the directory holding ``parts[-1]``, walked without following symlinks.

        The fd belongs to this object (do not close it); it stays valid until the next
        call or removal. Raises EntryRefused for a parent that is a symlink or no
        directory, ``_MissingParent`` for a missing one when not ``create``.
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
                        raise _MissingParent("/".join(key[: i + 1])) from None
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    where = "/".join(key[: i + 1])
                    st = os.lstat(comp, dir_fd=fd)
                    if stat.S_ISLNK(st.st_mode):
                        raise EntryRefused(f"its parent '{where}' is a symlink, which is never written through") from None
                    raise EntryRefused(f"its parent '{where}' is not a directory") from None
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        self._cached = (key, fd)
        return fd


def _remove(dfd: int, name: str) -> None:
    """Remove ``name`` in ``dfd`` (a whole tree for a directory), never following symlinks."""
    st = os.lstat(name, dir_fd=dfd)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dfd)
    else:
        os.unlink(name, dir_fd=dfd)


def _clear(dfd: int, name: str, keep_dir: bool) -> bool:
    """Make room for a new entry at ``name``; True if an existing directory is kept."""
    try:
        st = os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return False
    if keep_dir and stat.S_ISDIR(st.st_mode):
        return True
    _remove(dfd, name)
    return False


@dataclass
class LayerWriter:
    """Writes one layer's entries into the root, remembering what it wrote for its whiteouts."""

    parents: ParentDirs
    root: Path
    #: The host (uid, gid) for an entry's (uid, gid), or None to leave files owned by us.
    owners: Owners | None
    written: set[str] = field(default_factory=set)
    holders: set[str] = field(default_factory=set)  # parents of written paths
    skipped: list[str] = field(default_factory=list)

    def write(self, tf: tarfile.TarFile, entry: Entry) -> None:
        """Apply ``entry`` (read from ``tf``); raises EntryRefused, CorruptStream, OSError."""
        kind, m, parts = entry.kind, entry.member, entry.parts
        if kind is Kind.WHITEOUT:
            self._whiteout(entry.target)
            return
        if kind is Kind.OPAQUE:
            self._remove_lower_children(self.parents.fd(parts), "", "/".join(entry.target))
            return
        if kind is Kind.DEVICE:
            self.skipped.append("/" + entry.rel)
            return
        dfd = self.parents.fd(parts)
        base = parts[-1]
        if kind is Kind.DIRECTORY:
            if not _clear(dfd, base, keep_dir=True):
                os.mkdir(base, 0o700, dir_fd=dfd)
            self._meta_at(dfd, base, _DIR_FLAGS, m)
        elif kind is Kind.FILE:
            self._file(tf, m, dfd, base)
        elif kind is Kind.SYMLINK:
            _clear(dfd, base, keep_dir=False)
            os.symlink(m.linkname, base, dir_fd=dfd)
            if self.owners is not None:
                _unmapped_ok(lambda: os.chown(base, *self.owners(m.uid, m.gid), dir_fd=dfd,  # type: ignore[misc]
                                              follow_symlinks=False))
        elif kind is Kind.HARDLINK:
            if entry.target == parts:
                return
            self._hardlink(m.linkname, entry.target, parts)
        else:
            _clear(dfd, base, keep_dir=False)
            os.mkfifo(base, 0o600, dir_fd=dfd)
            self._meta_at(dfd, base, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, m)
        self._note_written(parts)

    def _note_written(self, parts: Sequence[str]) -> None:
        self.written.add("/".join(parts))
        for i in range(1, len(parts)):
            self.holders.add("/".join(parts[:i]))

    def _meta(self, fd: int, m: tarfile.TarInfo) -> None:
        if self.owners is not None:
            _unmapped_ok(lambda: os.fchown(fd, *self.owners(m.uid, m.gid)))  # type: ignore[misc]
        os.fchmod(fd, m.mode & 0o7777 & ~_SUGID)

    def _meta_at(self, dfd: int, base: str, flags: int, m: tarfile.TarInfo) -> None:
        fd = os.open(base, flags, dir_fd=dfd)
        try:
            self._meta(fd, m)
        finally:
            os.close(fd)

    # -- whiteouts -----------------------------------------------------------
    def _whiteout(self, target: list[str]) -> None:
        try:
            dfd = self.parents.fd(target, create=False)
        except _MissingParent:
            return  # nothing below to hide
        self._remove_lower(dfd, target[-1], "/".join(target))

    def _remove_lower(self, dfd: int, name: str, rel: str) -> None:
        """Remove what lower layers put at ``rel``, keeping what this layer wrote.

        ``dfd`` is always the cached parent or below it, so the cached fd stays valid.
        """
        try:
            st = os.lstat(name, dir_fd=dfd)
        except FileNotFoundError:
            return
        if rel not in self.written and rel not in self.holders:
            _remove(dfd, name)
            return
        if stat.S_ISDIR(st.st_mode):
            self._remove_lower_children(dfd, name, rel)

    def _remove_lower_children(self, dfd: int, name: str, rel: str) -> None:
        sub = os.open(name, _DIR_FLAGS, dir_fd=dfd) if name else os.dup(dfd)
        try:
            for child in sorted(os.listdir(sub)):
                self._remove_lower(sub, child, f"{rel}/{child}" if rel else child)
        finally:
            os.close(sub)

    # -- file contents and links ----------------------------------------------
    def _file(self, tf: tarfile.TarFile, m: tarfile.TarInfo, dfd: int, base: str) -> None:
        if m.size > _CHECK_SPACE_ABOVE:
            vfs = os.statvfs(dfd)
            if vfs.f_bavail * vfs.f_frsize < m.size:
                raise DiskFullError(f"no space for {m.size} bytes under {self.root}: free some space or move the cache with --cache-dir")
        _clear(dfd, base, keep_dir=False)
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            src = tf.extractfile(m)
            assert src is not None
            remaining = m.size
            while remaining:
                data = src.read(min(CHUNK, remaining))
                if not data:
                    raise CorruptStream("unexpected end of data")
                remaining -= len(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            self._meta(fd, m)
            os.utime(fd, ns=(int(m.mtime) * 10**9, int(m.mtime) * 10**9))
        finally:
            os.close(fd)

    def _hardlink(self, linkname: str, tparts: list[str], parts: list[str]) -> None:
        # Resolve the target's parent first: ParentDirs caches one directory at a time.
        try:
            tfd = os.dup(self.parents.fd(tparts, create=False))
        except _MissingParent:
            raise EntryRefused(f"hard link to {linkname!r}, which is not already inside the root") from None
        try:
            try:
                st = os.lstat(tparts[-1], dir_fd=tfd)
            except FileNotFoundError:
                raise EntryRefused(f"hard link to {linkname!r}, which is not already inside the root") from None
            if stat.S_ISDIR(st.st_mode):
                raise EntryRefused(f"hard link to directory {linkname!r}")
            dfd = self.parents.fd(parts)
            _clear(dfd, parts[-1], keep_dir=False)
            dfd = self.parents.fd(parts)
            os.link(tparts[-1], parts[-1], src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)
        finally:
            os.close(tfd)
