"""A blob held by reference written into a file, sharing the user's file blocks where the filesystem can.

An uncompressed layer of the user's files is our tar headers plus those files' bytes
(``blobref``), and the layer format puts the data of every big file at a multiple of
4096 bytes of the tar (``tarstream.ALIGN``). On a filesystem with reflinks (XFS made with
``reflink=1``, btrfs, bcachefs), the output's copy of such a file's data can then be a
clone of the file's own blocks (``FICLONERANGE``): the headers are written, the data is
shared, and a model of gigabytes costs the disk a few kilobytes more, not its size again.

The blob's bytes must equal its digest, yet a clone reads nothing, so nothing is hashed:
a file is cloned only when its fingerprint (size, mtime, ctime, inode; see
``blobref.FilePart``) is the one it was hashed with, both before and after the clone (a
write in between moves its mtime and ctime; the clone itself is atomic against writes).
Any other file (fingerprint moved, a data offset not aligned, another filesystem, no
reflinks there) is copied, read once and hashed as it goes, and must match its recorded
digest: the guarantee the streaming reader (``blobref.RefReader``) gives. A file with
no digest of its own recorded (a layer hashed while pushed: ``blobref.UNKNOWN``) is held
to its fingerprint instead, as a clone is: the same before and after its copy, or the
error says to build again (which hashes it anew).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import struct
from dataclasses import dataclass
from typing import Iterator

from ..image.blobref import UNKNOWN, FilePart, RefRecord, changed_error, open_part, stamp_of
from ..image.digest import CHUNK
from ..image.tarstream import ALIGN  # the block size a clone's offsets must be multiples of; the tar's data is aligned to it

__all__ = ["CloneReport", "write_record", "clone_range"]

#: ``_IOW(0x94, 13, struct file_clone_range)`` from <linux/fs.h>: the same on every
#: architecture Linux runs Python on (the struct is four 64-bit fields).
FICLONERANGE = 0x4020940D
#: What a clone that cannot be done here raises: another filesystem (EXDEV), none of
#: reflinks (EOPNOTSUPP: ext4, tmpfs; ENOTTY, ENOSYS: no such ioctl), offsets the
#: filesystem cannot share (EINVAL), a file it will not share (EPERM, ETXTBSY: swap, DAX,
#: immutable; EBADF: opened in a way it refuses). Each means: copy this file instead.
_CANNOT_CLONE = frozenset({errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOTTY, errno.ENOSYS,
                           errno.EINVAL, errno.EPERM, errno.ETXTBSY, errno.EBADF})


@dataclass
class CloneReport:
    """Where the bytes of one written blob came from: shared blocks, or written."""

    cloned: int = 0  # bytes shared with the user's files (no data written)
    written: int = 0  # bytes written: headers, padding, file tails and copied files
    copied_files: int = 0  # files copied because they could not be cloned


def clone_range(src_fd: int, src_offset: int, length: int, dst_fd: int, dst_offset: int) -> bool:
    """Share ``length`` bytes of ``src_fd`` at ``src_offset`` into ``dst_fd`` at ``dst_offset``.

    True when done; False when this filesystem cannot (see ``_CANNOT_CLONE``): then
    nothing was changed and the caller copies. Raises OSError for anything else (a full
    disk, an I/O error).
    """
    arg = struct.pack("qQQQ", src_fd, src_offset, length, dst_offset)
    try:
        fcntl.ioctl(dst_fd, FICLONERANGE, arg)
    except OSError as exc:
        if exc.errno in _CANNOT_CLONE:
            return False
        raise
    return True


def write_record(record: RefRecord, dst_fd: int) -> CloneReport:
    """Write the blob ``record`` describes into ``dst_fd`` (empty, at offset 0), cloning what it can.

    Example::

        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        report = write_record(cache.ref(digest), fd)

    Raises SourceChangedError (naming the file) when a file changed or went away since
    the build: what was written is then not the blob, and the caller removes it.
    """
    report = CloneReport()
    pos = 0
    inline_at = 0
    for part in record.parts:
        if isinstance(part, int):
            _write_all(dst_fd, memoryview(record.inline)[inline_at:inline_at + part])
            inline_at += part
            report.written += part
            pos += part
        else:
            _put_file(part, record.digest, dst_fd, pos, report)
            pos += part.size
    return report


def _put_file(part: FilePart, digest: str, dst_fd: int, pos: int, report: CloneReport) -> None:
    f, st = open_part(part, digest)
    with f:
        whole = part.size - part.size % ALIGN
        if (whole and pos % ALIGN == 0 and part.offset % ALIGN == 0 and stamp_of(st) == part.stamp
                and clone_range(f.fileno(), part.offset, whole, dst_fd, pos)):
            os.lseek(dst_fd, pos + whole, os.SEEK_SET)  # a clone moves no file offset
            f.seek(part.offset + whole)
            tail = f.read(part.size - whole)
            _write_all(dst_fd, tail)
            after = os.fstat(f.fileno())
            if after.st_size != part.expected_file_size or stamp_of(after) != part.stamp \
                    or len(tail) != part.size - whole:
                raise changed_error(part, digest)  # changed while shared: what was cloned may not be it
            report.cloned += whole
            report.written += len(tail)
            return
        if part.sha256 == UNKNOWN and stamp_of(st) != part.stamp:
            raise changed_error(part, digest)  # nothing to check its bytes against but the fingerprint
        _copy_hashed(f, part, digest, dst_fd)
        report.written += part.size
        report.copied_files += 1


def _copy_hashed(f: io.FileIO, part: FilePart, digest: str, dst_fd: int) -> None:
    """Copy the file, reading and hashing (when its sha256 is recorded) on a reader thread
    while this one writes."""
    from ..image.readahead import prefetch

    h = hashlib.sha256() if part.sha256 != UNKNOWN else None
    n = 0

    def chunks() -> Iterator[bytes]:
        nonlocal n
        f.seek(part.offset)
        while n < part.size and (data := f.read(min(CHUNK, part.size - n))):
            if h is not None:
                h.update(data)
            n += len(data)
            yield data

    for chunk in prefetch(chunks()):
        _write_all(dst_fd, chunk)
    if h is None:
        after = os.fstat(f.fileno())
        if n != part.size or after.st_size != part.expected_file_size or stamp_of(after) != part.stamp:
            raise changed_error(part, digest)
    elif n != part.size or h.hexdigest() != part.sha256:
        raise changed_error(part, digest)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
