"""A layer's tar stream read once: hashed (the blob's digest) as it is sent.

A push of a new model used to read every byte twice: once in the build to hash the
layer held by reference (``layer._record_by_reference``), once more to upload it. The
registry does not need the digest before the upload's final ``PUT ?digest=``, so a
layer whose digest nobody knows yet can be hashed in the pass that streams it up
(``registry.speculative``). This reader is that pass's source: the same bytes as
``tarstream.tar_chunks`` (headers from ``tarstream.entry_headers``, so the blob is byte
for byte the one ``build`` writes), readable from any offset so an upload can resume
where the registry says it stands.

One pass, one hash: the reader feeds the blob's digest as it reads (on the upload's
read-ahead thread, so hashing overlaps the sending thread's socket writes: both cores),
only with bytes past the highest position hashed so far (``streamed``). A resume re-reads
from the registry's offset, sends the gap again without hashing it, and hashes on from
where it stopped, so the hash is still exactly one pass over the stream and a resume
costs only the gap.

The record written (``record()``) is the one ``build`` writes except that no file's own
sha256 is in it (``blobref.UNKNOWN``): computing them was a second hash of every model
byte, the one CPU cost a plain upload does not pay (docs/performance.md, "Push in one
read"). What they served still holds: the build's layer index is keyed by the files'
fingerprints, not their digests; a reader of the held blob later checks the stream's
digest (or the registry does); only a ``touch`` of such a file between the push and a
later read is no longer confirmed file by file (see ``blobref`` and ``transport.clone``),
and the next build that sees it hashes the layer anew, with every file's digest.

File checks are those of an unhashed ``blobref.RefReader``: a file's size and mtime must
be the scan's when it is opened (the entry's stat stamp), its whole fingerprint the same
when it is opened again for a resume, and unchanged once its last byte is read, before
those bytes are handed out. A file written meanwhile is a ``SourceChangedError`` naming
it; the caller then commits nothing.
"""

from __future__ import annotations

import hashlib
import io
import os
from bisect import bisect_right
from typing import Any, Sequence

from .blobref import UNKNOWN, FilePart, RefRecord, SeekableStream, SourceChangedError, fingerprint_of, stamp_of
from .tarstream import Entry, stream_parts

__all__ = ["OnePassReader", "changed_while_sent"]


def changed_while_sent(path: str) -> SourceChangedError:
    return SourceChangedError(f"{path} changed while it was being pushed; nothing of its layer was committed: "
                              "push again once it is stable")


def _layout(entries: Sequence[Entry], epoch: int) -> tuple[list[int], list[bytes | Entry]]:
    """The stream as runs of our bytes (headers, padding) and files, with each part's start."""
    starts: list[int] = []
    parts: list[bytes | Entry] = []
    pos = 0

    def add(part: bytes | Entry, size: int) -> None:
        nonlocal pos
        if not size:
            return
        if isinstance(part, bytes) and parts and isinstance(parts[-1], bytes):
            parts[-1] += part
        else:
            starts.append(pos)
            parts.append(part)
        pos += size

    for part in stream_parts(entries, epoch):
        add(part, len(part) if isinstance(part, bytes) else part.size)
    starts.append(pos)  # the end
    return starts, parts


class OnePassReader(SeekableStream):
    """The layer's tar stream, seekable, hashed once (see the module docs).

    ``size`` is known before a byte is read (headers plus padded file sizes), so the
    upload's Content-Length is too. Once every byte was read, ``digest`` and ``record()``
    (the ``RefRecord`` a build would have written, less the files' own digests) are available.
    """

    def __init__(self, entries: Sequence[Entry], epoch: int) -> None:
        super().__init__()
        self._starts, self._parts = _layout(entries, epoch)
        self.reached = 0  # bytes [0, reached) were read (and their files checked)
        self.streamed = 0  # bytes [0, streamed) went into the blob's digest
        self._hash = hashlib.sha256()
        self._stamps: dict[int, tuple[int, int, int]] = {}  # part index -> stamp when first opened
        self._done: dict[int, FilePart] = {}
        self._pos = 0
        self._file: io.FileIO | None = None
        self._file_part = -1
        self._opened: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def size(self) -> int:
        return self._starts[-1]

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Go to ``offset``, at most ``streamed``: bytes are hashed in order, none ever skipped
        (an upload resumes at an offset the registry received, so one already read)."""
        offset = self._target(offset, whence)
        if not 0 <= offset <= min(self.reached, self.streamed):
            raise ValueError(f"offset {offset} is outside the part of the stream hashed so far "
                             f"(0-{min(self.reached, self.streamed)})")
        if offset != self._pos:
            self._close_file()
        self._pos = offset
        return offset

    def _account(self, at: int, data: bytes | bytearray | memoryview) -> None:
        """Feed the blob's digest with the part of ``data`` (the stream's bytes from ``at``, in
        order) not fed yet."""
        end = at + len(data)
        if end <= self.streamed:
            return
        if at > self.streamed:
            raise ValueError(f"bytes from {at} given before those from {self.streamed}")
        self._hash.update(memoryview(data)[self.streamed - at:])
        self.streamed = end

    @property
    def digest(self) -> str:
        if self.streamed != self.size or self.reached != self.size:
            raise ValueError("the stream was not read to its end")
        return "sha256:" + self._hash.hexdigest()

    def record(self) -> RefRecord:
        """The by-reference record of the blob read (headers inline, each file as first opened)."""
        pieces: list[bytes | FilePart] = [p if isinstance(p, bytes) else self._done[i] for i, p in enumerate(self._parts)]
        return RefRecord.build(self.digest, pieces)

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        want = min(len(view), self.size - self._pos)
        got = 0
        while got < want:
            at = self._pos + got
            i = bisect_right(self._starts, at) - 1
            part, start = self._parts[i], self._starts[i]
            end = self._starts[i + 1]
            room = view[got:got + min(end - at, want - got)]
            if isinstance(part, bytes):
                n = len(room)
                room[:] = part[at - start:at - start + n]
            else:
                n = self._read_file(i, part, at - start, room)
            self._mark_read(i, part, at + n)
            got += n
        self._account(self._pos, view[:got])
        self._pos += got
        return got

    def _read_file(self, i: int, e: Entry, offset: int, room: memoryview) -> int:
        """Bytes of file part ``i`` at ``offset`` into ``room``; its fingerprint checked when
        opened and once its last byte is read (before they are handed out)."""
        assert e.source is not None
        if self._file is None or self._file_part != i or self._file.tell() != offset:
            self._open(i, e, offset)
        assert self._file is not None
        n = self._file.readinto(room) or 0
        if n == 0:
            raise changed_while_sent(e.source)  # shrank while read
        if offset + n == e.size:
            if fingerprint_of(os.fstat(self._file.fileno())) != self._opened:  # written while read
                raise changed_while_sent(e.source)
            self._close_file()
        return n

    def _open(self, i: int, e: Entry, offset: int) -> None:
        assert e.source is not None
        self._close_file()
        try:
            f = io.FileIO(e.source, "rb")
        except OSError:
            raise changed_while_sent(e.source) from None
        st = os.fstat(f.fileno())
        stamp = stamp_of(st)
        first = self._stamps.setdefault(i, stamp)
        if st.st_size != e.size or (e.stamp and st.st_mtime_ns != e.stamp[0]) or stamp != first:
            f.close()
            raise changed_while_sent(e.source)
        f.seek(offset)
        self._file, self._file_part = f, i
        self._opened = fingerprint_of(st)

    def _mark_read(self, i: int, part: bytes | Entry, end: int) -> None:
        """Bytes up to ``end`` (stream offset, within part ``i``) were read; a file read to its
        end is recorded as it was first opened."""
        if end <= self.reached:
            return
        if isinstance(part, Entry) and end == self._starts[i + 1]:
            assert part.source is not None
            self._done[i] = FilePart(os.path.abspath(part.source), part.size, self._stamps[i], UNKNOWN)
        self.reached = end

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._file_part = -1

    def close(self) -> None:
        self._close_file()
        super().close()
