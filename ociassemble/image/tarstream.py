"""A layer's tar stream: the same entries and epoch give the same bytes, on any machine.

PAX tar format as written by the stdlib's ``TarInfo.tobuf``; entries in the order
given (``scan_sources`` sorts them); every mtime = the build epoch; empty owner
names; the data of every file of ``ALIGN_MIN_SIZE`` or more starts at a multiple of
``ALIGN`` bytes of the stream, padded to it by a PAX ``comment`` record (``_header``),
so an output on a filesystem with reflinks can share the file's blocks instead of
copying them (``clone``). A byte of this stream changed is a ``LAYER_FORMAT`` bump.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from ..errors import ArchiveError, InputError
from .blobref import FilePart, stamp_of
from .digest import CHUNK

__all__ = ["ALIGN", "ALIGN_MIN_SIZE", "Entry", "entry_headers", "stream_parts", "tar_chunks"]

#: File data offsets in the tar stream are multiples of this: the block size of ext4, XFS
#: and btrfs as made by default (and the page size), which FICLONERANGE needs the source's
#: and the destination's offsets to be multiples of.
ALIGN = 4096
#: Files this big or bigger are aligned; a smaller one would cost up to 4.5 KiB of padding
#: for a clone that saves less than a write (a deps tree of small files stays as it was).
ALIGN_MIN_SIZE = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One entry of a layer as scanned: all its tar header says, and where its content is.

    ``key`` is what the layer index fingerprints: an entry whose key is unchanged
    writes the same header and (its ``stamp`` unchanged) the same content.
    """

    name: str  # in-image path, relative, no trailing slash
    kind: str  # dir | file | symlink | hardlink | chr | blk | fifo
    mode: int
    size: int = 0
    source: str | None = None
    linkname: str = ""
    uid: int = 0
    gid: int = 0
    devmajor: int = 0
    devminor: int = 0
    # change detector for the layer index: (mtime_ns, ctime_ns, ino, dev)
    stamp: tuple[int, ...] = ()

    def key(self) -> list[object]:
        return [self.name, self.kind, self.mode, self.size, self.linkname, self.uid, self.gid,
                self.devmajor, self.devminor, list(self.stamp)]



_TYPES = {
    "dir": tarfile.DIRTYPE,
    "file": tarfile.REGTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def _header(e: Entry, epoch: int, offset: int) -> bytes:
    """The entry's header as written at ``offset`` of the tar stream (a multiple of 512).

    A file of ``ALIGN_MIN_SIZE`` or more gets a PAX extended header carrying a ``comment``
    record (POSIX: "ignored by readers") sized so that the file's data starts at a
    multiple of ``ALIGN``; any record the entry needs anyway (a long path) is in the same
    header. A header that lands aligned as it is gets no padding.
    """
    info = tarfile.TarInfo(e.name + "/" if e.kind == "dir" else e.name)
    info.type = _TYPES[e.kind]
    info.mode = e.mode
    info.size = e.size if e.kind == "file" else 0
    info.mtime = epoch
    info.uid, info.gid = e.uid, e.gid
    info.uname = info.gname = ""
    info.linkname = e.linkname
    info.devmajor, info.devminor = e.devmajor, e.devminor
    plain = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    if e.kind != "file" or e.size < ALIGN_MIN_SIZE or (offset + len(plain)) % ALIGN == 0:
        return plain
    block = tarfile.BLOCKSIZE
    # records the entry needs anyway: the size of its own PAX header's data, if it has one
    needed = _octal(plain[124:136]) if plain[156:157] == tarfile.XHDTYPE else 0
    # data at offset + one PAX header block + its data blocks + the entry's header block
    blocks = -(-(needed + _MIN_COMMENT) // block)
    blocks += (-(offset // block) - 2 - blocks) % (ALIGN // block)
    record = blocks * block - needed  # the comment record fills the PAX data blocks exactly
    info.pax_headers = {"comment": " " * (record - len("comment") - 3 - len(str(record)))}
    padded = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    if (offset + len(padded)) % ALIGN:  # tarfile wrote its records otherwise than read above
        raise ArchiveError(f"{e.name}: its tar header does not align its data ({len(padded)} bytes at {offset}); "
                           "this Python's tarfile writes PAX headers in a way ociassemble does not know")
    return padded


#: The shortest ``comment`` record: ``12 comment=\n``.
_MIN_COMMENT = 12


def _octal(field: bytes) -> int:
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def entry_headers(entries: Iterable[Entry], epoch: int) -> Iterator[tuple[Entry, bytes]]:
    """Each entry with its header, placed where the tar stream will have it (``_header``)."""
    offset = 0
    for e in entries:
        header = _header(e, epoch, offset)
        yield e, header
        offset += len(header)
        if e.kind == "file":
            offset += e.size + (-e.size % tarfile.BLOCKSIZE)


def stream_parts(entries: Iterable[Entry], epoch: int) -> Iterator[bytes | Entry]:
    """The tar stream as its parts in order: our bytes (each header, each file's padding, the
    closing blocks) and the files (their ``Entry``: the file's own bytes). What a by-reference
    record (``layer``) and a reader of the stream from any offset (``onepass``) lay out."""
    for e, header in entry_headers(entries, epoch):
        yield header
        if e.kind == "file":
            yield e
            yield b"\0" * (-e.size % tarfile.BLOCKSIZE)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def _changed(path: str) -> InputError:
    return InputError(f"{path} changed while it was being read; build again once it is stable")


def tar_chunks(entries: Iterable[Entry], epoch: int, files: dict[str, FilePart] | None = None) -> Iterator[bytes]:
    """The layer's tar stream in chunks of exactly ``CHUNK`` bytes (the last one shorter).

    With ``files``, each file's content is also hashed on its own as it is read and
    ``files[entry name]`` records it (absolute path, stat fingerprint, sha256): what a
    by-reference blob needs. This runs on the reader thread (``prefetch``), beside the
    stream's hash on the consumer's.

    File contents are read straight into the chunk being filled (``readinto``), so a
    byte is copied once from the page cache and never again; fixed-size chunks are
    also gzip's blocks, so the compressor takes them as they are. Each chunk is a new
    buffer, never changed once yielded.
    """
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    pos = 0

    def fill(size: int, read_into: Callable[[memoryview], int]) -> Iterator[bytes]:
        """Fill the chunks with ``size`` bytes, ``read_into(room)`` writing some into ``room``
        and saying how many; each chunk filled is yielded and a new one begun."""
        nonlocal buf, view, pos
        while size:
            n = read_into(view[pos:pos + min(CHUNK - pos, size)])
            size -= n
            pos += n
            if pos == CHUNK:
                yield buf
                buf = bytearray(CHUNK)
                view = memoryview(buf)
                pos = 0

    def put(data: bytes) -> Iterator[bytes]:
        done = 0

        def copy(room: memoryview) -> int:
            nonlocal done
            room[:] = data[done:done + len(room)]
            done += len(room)
            return len(room)

        return fill(len(data), copy)

    for e, header in entry_headers(entries, epoch):
        yield from put(header)
        if e.kind != "file":
            continue
        assert e.source is not None
        source: str = e.source
        try:
            f = open(e.source, "rb", buffering=0)
        except FileNotFoundError:
            raise InputError(f"{e.source} vanished during the build; build again") from None
        except PermissionError:
            raise InputError(f"{e.source}: permission denied; make it readable") from None
        with f:
            st = os.fstat(f.fileno())
            if st.st_size != e.size or (e.stamp and st.st_mtime_ns != e.stamp[0]):
                raise _changed(e.source)
            own = hashlib.sha256() if files is not None else None

            def read(room: memoryview) -> int:
                n = f.readinto(room)
                if not n:
                    raise _changed(source)
                if own is not None:
                    own.update(room[:n])
                return n

            yield from fill(e.size, read)
            if f.read(1) or os.fstat(f.fileno()).st_mtime_ns != st.st_mtime_ns:
                raise _changed(e.source)
            if files is not None and own is not None:
                files[e.name] = FilePart(os.path.abspath(e.source), e.size, stamp_of(st), own.hexdigest())
        yield from put(b"\0" * (-e.size % tarfile.BLOCKSIZE))
    yield from put(b"\0" * (2 * tarfile.BLOCKSIZE))
    if pos:
        yield bytes(view[:pos])
