"""Blobs held by reference: an uncompressed layer kept as our tar headers plus the user's files.

An uncompressed layer of a file tree is fully described by the tar headers we generate
and the files' own bytes, so the cache keeps only that description (``refs/sha256/<hex>``
beside ``blobs/sha256/<hex>``): the header and padding bytes (zlib-compressed: they
are mostly zeros), and for each file its path, the stat fingerprint and the sha256 of
its content seen when the layer was hashed. No copy of the weights is written, so a
model costs the disk once. A layer a push hashed while sending it (``onepass``) records
no file's own sha256 (``UNKNOWN``): that pass costs the upload and the blob's one hash,
no more; a file of it whose fingerprint moved is then vouched for by the whole stream's
digest (or the registry's check of it), not by its own.

Reading such a blob (``RefReader``) streams headers and files in order. Each file's
fingerprint (size, mtime, ctime, inode) is checked when it is opened; a file whose
fingerprint moved but whose size did not is hashed again and accepted if its content
is the same (a ``touch``, a copy back; with no recorded sha256 of its own, accepted
and left to the stream's digest). The whole stream is hashed as it goes and the
last bytes are only handed out once the digest matched, so a reader never gets a blob
whose bytes differ from its digest: a file changed or deleted since the build is a
``SourceChangedError`` naming it.

A reader whose receiver checks the digest itself (a registry, on the upload's final
``PUT ?digest=``) opens it with ``hashed=False``: the second sha256 pass over the model
is then left out, which is most of what a push cost beyond sending the bytes. What
stands in for it:

- each file's fingerprint is checked when it is opened (as above) and again, on the
  open descriptor, once its last byte is read and before those bytes are handed out.
  Any write to a file moves its ctime, which no user-space call can set back (``utime``
  sets mtime but stamps ctime with the present), so a file written between the build
  and the end of its read is seen, named, and the blob's last bytes never leave. What
  can slip past a stat is a write landing in the same timestamp tick as the build's
  fstat (kernels before 6.13 stamp with a coarse clock; 6.13+ give a file whose times
  were just read a fine-grained stamp on its next change), or bytes changed under the
  filesystem (a raw block write, bit rot);
- for those the registry is the check: it hashes what it received and answers the
  final PUT with ``DIGEST_INVALID``, committing nothing (registry-notes), and since a
  manifest is only PUT once every blob is in (``registry.push``), no tag ever points at
  wrong bytes. ``mismatch_error`` then names the file whose content moved.

Readers whose output nobody checks again (a layout, an archive, ``cache verify``,
``run``'s unpack) keep ``hashed=True``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import zlib
from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import DigestMismatchError, OciAssembleError, SourceChangedError  # (importable from here)
from .digest import CHUNK, Digest

__all__ = ["FilePart", "RefRecord", "RefReader", "SeekableStream", "SourceChangedError", "REF_FORMAT", "UNKNOWN", "changed_error",
           "mismatch_error", "fingerprint_of", "open_part"]

#: The record's own format; a record of another format is treated as absent.
REF_FORMAT = 1
#: A file's sha256 not computed (``FilePart.sha256``): a push hashing the layer while it
#: sends it keeps to the blob's one hash (``onepass``). Readers then rely on the stream's.
UNKNOWN = ""


@dataclass(frozen=True)
class FilePart:
    """One file of a by-reference blob, or one run of bytes in it (an OCI archive's member):
    where it is and what it was when hashed."""

    path: str
    size: int  # the part's bytes
    stamp: tuple[int, int, int]  # (mtime_ns, ctime_ns, ino)
    sha256: str  # hex digest of the part's bytes, or UNKNOWN (a layer hashed while pushed: onepass)
    offset: int = 0  # where the part starts in the file
    file_size: int | None = None  # the whole file's size when the part is a run of it; None: the whole file

    @property
    def whole(self) -> bool:
        """Whether the part is the file's whole content (its sha256 is the file's)."""
        return self.file_size is None

    @property
    def expected_file_size(self) -> int:
        return self.size if self.file_size is None else self.file_size

    def to_json(self) -> list[Any]:
        raw: list[Any] = [self.path, self.size, list(self.stamp), self.sha256]
        return raw if self.whole else [*raw, [self.offset, self.file_size]]

    @classmethod
    def from_json(cls, raw: list[Any]) -> "FilePart":
        path, size, stamp, sha, *span = raw
        offset, file_size = (int(span[0][0]), int(span[0][1])) if span else (0, None)
        if len(span) > 1 or offset < 0 or (file_size is not None and offset + int(size) > file_size):
            raise ValueError(f"file part {path!r}: its run of bytes is not inside the file")
        return cls(str(path), int(size), (int(stamp[0]), int(stamp[1]), int(stamp[2])), str(sha), offset, file_size)

    def read_sha256(self) -> str:
        """The hex sha256 of the part's bytes as the file holds them now (OSError if unreadable)."""
        with io.FileIO(self.path, "rb") as f:
            f.seek(self.offset)
            return _hash_run(f, self.size)


@dataclass(frozen=True)
class RefRecord:
    """A blob as a sequence of inline byte runs and files.

    ``parts`` alternates: an int is that many bytes taken next from ``inline`` (our tar
    headers and padding), a ``FilePart`` is a file's content (or a run of it).
    """

    digest: str
    size: int
    inline: bytes
    parts: tuple[int | FilePart, ...]

    @property
    def files(self) -> list[FilePart]:
        return [p for p in self.parts if isinstance(p, FilePart)]

    def fresh(self) -> bool:
        """Every file still has the fingerprint it was hashed with (stat only, nothing read)."""
        return not any(_moved(p) for p in self.files)

    def to_bytes(self) -> bytes:
        return json.dumps({"format": REF_FORMAT, "digest": self.digest, "size": self.size,
                           "inline": base64.b64encode(zlib.compress(self.inline, 6)).decode(),
                           "parts": [p if isinstance(p, int) else p.to_json() for p in self.parts]},
                          sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "RefRecord":
        """Raises ValueError (or KeyError/TypeError) for a record that is not sound."""
        raw = json.loads(data)
        if raw.get("format") != REF_FORMAT:
            raise ValueError(f"record format {raw.get('format')!r}")
        inline = zlib.decompress(base64.b64decode(raw["inline"]))
        parts = tuple(p if isinstance(p, int) else FilePart.from_json(p) for p in raw["parts"])
        rec = cls(str(Digest(raw["digest"])), int(raw["size"]), inline, parts)
        if sum(p if isinstance(p, int) else p.size for p in parts) != rec.size or \
                sum(p for p in parts if isinstance(p, int)) != len(inline):
            raise ValueError("parts do not add up to the size")
        return rec

    @classmethod
    def build(cls, digest: str, pieces: Iterable[bytes | FilePart]) -> "RefRecord":
        """A record from the stream's pieces in order (adjacent byte runs merged)."""
        inline = bytearray()
        parts: list[int | FilePart] = []
        size = 0
        for piece in pieces:
            if isinstance(piece, FilePart):
                if not piece.size:
                    continue  # an empty file adds no byte to the blob: nothing to read back
                parts.append(piece)
                size += piece.size
                continue
            if not piece:
                continue
            inline += piece
            size += len(piece)
            if parts and isinstance(parts[-1], int):
                parts[-1] += len(piece)
            else:
                parts.append(len(piece))
        return cls(digest, size, bytes(inline), tuple(parts))


def stamp_of(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _holds_image(part: FilePart, digest: str) -> bool:
    """Whether the part is an image's own blob (a layout's file, an archive's member), read
    from an image, rather than a file of a layer ociassemble built."""
    return not part.whole or part.sha256 == Digest(digest).hex


def _gone(part: FilePart, digest: str) -> SourceChangedError:
    if _holds_image(part, digest):
        return SourceChangedError(f"{part.path} was deleted after ociassemble read the image in it (it held layer "
                                  f"{digest[:19]}): put it back, or run the command again to read the image from where "
                                  "it is now")
    return SourceChangedError(f"{part.path} was deleted after the image was built (it is part of layer {digest[:19]}): "
                              "put it back or build the image again")


def changed_error(part: FilePart, digest: str) -> SourceChangedError:
    what, fix = ((f"after ociassemble read the image in it (it holds layer {digest[:19]})", "run the command again to "
                  "read the image as it is now") if _holds_image(part, digest) else
                 (f"after the image was built (it is part of layer {digest[:19]})", "build the image again"))
    return SourceChangedError(f"{part.path} changed {what}: {fix}")


def fingerprint_of(st: os.stat_result) -> tuple[int, int, int, int]:
    """(size, mtime_ns, ctime_ns, inode): what a file's content cannot change without changing."""
    return (st.st_size, *stamp_of(st))


def open_part(part: FilePart, digest: str) -> tuple[io.FileIO, os.stat_result]:
    """The part's file, opened at the part's first byte, with its stat then, once its size is
    still the recorded one.

    Every reader of a held blob (this module's, ``transport.clone``'s) opens its files
    here, so a file gone, unreadable or resized is the same one-line error everywhere.
    """
    try:
        f = io.FileIO(part.path, "rb")
    except FileNotFoundError:
        raise _gone(part, digest) from None
    except OSError as exc:  # no permission, a folder now, an I/O error: what the fix says holds for each
        raise SourceChangedError(f"{part.path} cannot be read any more ({exc.strerror}; it is part of layer "
                                 f"{digest[:19]}): make it readable or build the image again") from None
    try:
        st = os.fstat(f.fileno())
        if st.st_size != part.expected_file_size:
            raise changed_error(part, digest)
        f.seek(part.offset)
    except BaseException:
        f.close()
        raise
    return f, st


def _hash_run(f: io.FileIO, size: int) -> str:
    """The hex sha256 of the next ``size`` bytes of ``f`` (fewer if it ends first)."""
    h = hashlib.sha256()
    view = memoryview(bytearray(CHUNK))
    left = size
    while left:
        n = f.readinto(view[:min(CHUNK, left)])
        if not n:
            break
        h.update(view[:n])
        left -= n
    return h.hexdigest()


def _open_checked(part: FilePart, digest: str) -> tuple[io.FileIO, tuple[int, int, int, int]]:
    """The part's file, opened, once its fingerprint (or, failing that, its content) matches;
    with the fingerprint it had then (what it must still have once read)."""
    f, st = open_part(part, digest)
    try:
        if stamp_of(st) != part.stamp and part.sha256 != UNKNOWN:  # unknown: the stream's digest decides
            if _hash_run(f, part.size) != part.sha256:
                raise changed_error(part, digest)
            f.seek(part.offset)
        return f, fingerprint_of(st)
    except BaseException:
        f.close()
        raise


class SeekableStream(io.RawIOBase):
    """A read-only stream of ``size`` bytes that keeps its own position (``_pos``): what the
    readers of a held layer (this module's, ``onepass``'s) share; each says how it reads and
    which offsets a seek may reach (``_target`` resolves ``whence``)."""

    _pos = 0

    @property
    def size(self) -> int:
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def _target(self, offset: int, whence: int) -> int:
        if whence == io.SEEK_CUR:
            return offset + self._pos
        if whence == io.SEEK_END:
            return offset + self.size
        return offset


class RefReader(SeekableStream):
    """A by-reference blob as a readable stream, verified as it goes (see the module docs).

    Seeking is supported so a resumed upload can go on from the registry's offset. Hashed,
    ``seek(n)`` re-reads and hashes from the start (or from where it is) up to ``n``: bytes
    are only ever handed out from a stream hashed from byte 0. With ``hashed=False`` (the
    receiver checks the digest) it goes straight to the file holding byte ``n``, opened
    and checked like any other.
    """

    def __init__(self, record: RefRecord, *, hashed: bool = True) -> None:
        super().__init__()
        self.record = record
        self.hashed = hashed
        self._restart()

    def _restart(self) -> None:
        self._pos = 0
        self._part = 0  # index into record.parts
        self._in_part = 0  # bytes of the current part already read
        self._inline_at = 0  # offset in record.inline of the current inline run
        self._file: io.FileIO | None = None
        self._opened: tuple[int, int, int, int] | None = None  # the open file's fingerprint then
        self._hash = hashlib.sha256()

    @property
    def size(self) -> int:
        return self.record.size

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        offset = max(0, min(self._target(offset, whence), self.record.size))
        if not self.hashed:
            return self._jump(offset)
        if offset < self._pos:
            self._close_file()
            self._restart()
        buf = bytearray(min(CHUNK, max(1, offset - self._pos)))
        while self._pos < offset:
            n = self.readinto(memoryview(buf)[:min(len(buf), offset - self._pos)])
            if not n:
                break
        return self._pos

    def _jump(self, offset: int) -> int:
        """Unhashed seek: to the part holding byte ``offset``, its file opened and checked there."""
        self._close_file()
        self._restart()
        self._pos = offset
        if offset >= self.record.size:
            self._part = len(self.record.parts)
            return offset
        start = 0
        for i, part in enumerate(self.record.parts):
            size = part if isinstance(part, int) else part.size
            if offset < start + size:
                self._part, self._in_part = i, offset - start
                if isinstance(part, FilePart):
                    self._file, self._opened = _open_checked(part, self.record.digest)
                    self._file.seek(part.offset + self._in_part)
                return offset
            start += size
            if isinstance(part, int):
                self._inline_at += part
        raise AssertionError("parts add up to the size (checked when the record was read)")

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        want = min(len(view), self.record.size - self._pos)
        if want <= 0:
            return 0
        got = 0
        parts = self.record.parts
        while got < want:
            part = parts[self._part]
            if isinstance(part, int):
                n = min(part - self._in_part, want - got)
                start = self._inline_at + self._in_part
                view[got:got + n] = self.record.inline[start:start + n]
            elif not part.size:  # (records before empty files were left out)
                self._part += 1
                continue
            else:
                if self._file is None:
                    self._file, self._opened = _open_checked(part, self.record.digest)
                n = self._file.readinto(view[got:got + min(part.size - self._in_part, want - got)]) or 0
                if n == 0:
                    raise changed_error(part, self.record.digest)  # shrank while read
                if not self.hashed and self._in_part + n == part.size and \
                        fingerprint_of(os.fstat(self._file.fileno())) != self._opened:
                    raise changed_error(part, self.record.digest)  # written while read: its last bytes stay here
            got += n
            self._in_part += n
            size = part if isinstance(part, int) else part.size
            if self._in_part == size:
                if isinstance(part, int):
                    self._inline_at += part
                else:
                    self._close_file()
                self._part += 1
                self._in_part = 0
        self._pos += got
        if not self.hashed:
            return got
        self._hash.update(view[:got])
        if self._pos == self.record.size:
            actual = "sha256:" + self._hash.hexdigest()
            if actual != self.record.digest:
                self._pos -= got  # nothing of the last read goes out
                raise mismatch_error(self.record)
        return got

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._opened = None

    def close(self) -> None:
        self._close_file()
        super().close()


def mismatch_error(record: RefRecord) -> OciAssembleError:
    """The error for a by-reference blob whose bytes did not hash to its digest (here, or at
    a registry that answered ``DIGEST_INVALID``): naming the file whose content moved, found
    by hashing each file again (this path only runs once something is known to be wrong),
    or the image file that never held those bytes (one held unread: ``BlobCache.hold_unchecked``)."""
    changed = [p for p in record.files if _differs(p)]
    if changed:
        part = changed[0]
        if _holds_image(part, record.digest) and not _moved(part):
            try:
                actual = "sha256:" + part.read_sha256()
            except OSError:
                return changed_error(part, record.digest)
            return DigestMismatchError(record.digest, actual, part.path + ("" if part.whole else f" at byte {part.offset}"))
        return changed_error(part, record.digest)
    return SourceChangedError(f"layer {record.digest[:19]} no longer hashes to its digest (a file of it was changed "
                              "while being read): build the image again")


def _moved(part: FilePart) -> bool:
    """Whether the file's fingerprint is no longer the recorded one (or it is gone)."""
    try:
        st = os.stat(part.path)
    except OSError:
        return True
    return st.st_size != part.expected_file_size or stamp_of(st) != part.stamp


def _differs(part: FilePart) -> bool:
    """Whether the file's content no longer hashes to what the record says (best effort: with
    no sha256 of its own recorded, whether its fingerprint moved)."""
    try:
        if part.sha256 == UNKNOWN:
            return _moved(part)
        return part.read_sha256() != part.sha256
    except OSError:
        return True


def verify_record(record: RefRecord) -> str:
    """'' when the blob still reads back to its digest, else the one-line reason."""
    try:
        with RefReader(record) as r:
            buf = bytearray(CHUNK)
            while r.readinto(buf):
                pass
    except SourceChangedError as exc:
        return str(exc)
    return ""
