"""A base layer's diff_id, verified in the pass that takes its bytes into the cache.

An image config's ``rootfs.diff_ids`` name the layers' uncompressed tars; runtimes
key unpacked layers by them and our own outputs (docker-archive, the layer cache)
trust them. A base whose config lies about them is refused here, naming the layer.
The check decompresses the blob on the read that verifies its compressed digest (no
extra read of the source; an uncompressed layer's diff_id is its digest, so nothing
more) and is done once per blob: the verified pair is remembered in the cache
(``BlobCache.remember_diff_id``), so later builds do not pay again.

That pass copies the blob into the cache, or, read from a layout's file, records a
reference to that file instead (``blobref``): no second copy of a model's layer.

A push from a cache that never saw the image (``defer``) makes no such pass before it
starts: an uncompressed layer is checked by the registry as it is sent, and a compressed
one's pass is left to the push, which runs it beside the uploads and sends the layer only
once it passed (``_deferred``).
"""

from __future__ import annotations

import hashlib
import io
import os
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import zstandard
from isal import igzip_threaded, isal_zlib

from ..errors import ArchiveError
from .blobref import FilePart, RefRecord, fingerprint_of, stamp_of
from .cache import BlobCache, BlobWriter
from .digest import CHUNK, Digest, VerifyingReader
from .oci import Descriptor, MediaType

__all__ = ["HeldIn", "StagedBlob", "all_or_nothing", "stage_layer", "verify_cached_diff_id"]

_CODEC_ERRORS = (EOFError, OSError, ValueError, zlib.error, isal_zlib.error, zstandard.ZstdError)


def _mismatch(desc: Descriptor, where: str, claimed: str, actual: str) -> ArchiveError:
    return ArchiveError(f"{where}: layer {desc.digest} unpacks to diff_id {actual}, but the image config says "
                        f"{claimed}: the config does not describe its layers; re-create the base image")


class _CorruptStream(ArchiveError):
    """A layer blob cannot be decompressed."""


@dataclass
class StagedBlob:
    """A layer copied and verified but not yet in the cache: ``commit`` puts it there.

    Staging lets a reader verify every layer of an image before keeping any of them,
    so a refused image leaves nothing in the cache.
    """

    cache: BlobCache
    writer: BlobWriter | None
    desc: Descriptor
    diff_id: str | None
    held: RefRecord | None = None  # kept by reference to the file it was read from (``stage_layer``)
    unchecked: RefRecord | None = None  # held for this run by reference to a file not read (``defer``)
    #: the diff_id the config claims and its check, left for the push (``defer``)
    check: tuple[str, Callable[[], None]] | None = None

    def commit(self) -> None:
        if self.writer is not None:
            self.writer.commit(Digest(self.desc.digest))
        if self.held is not None:
            self.cache.put_ref(self.held)
        if self.unchecked is not None:
            self.cache.hold_unchecked(self.unchecked)
        if self.check is not None:
            self.cache.defer_check(self.desc.digest, *self.check)
        if self.diff_id is not None:
            self.cache.remember_diff_id(self.desc.digest, self.diff_id)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


@contextmanager
def all_or_nothing() -> Iterator[list[StagedBlob]]:
    """A list to stage an image's layers in: all kept when the block ends, none if it raises."""
    staged: list[StagedBlob] = []
    try:
        yield staged
        for s in staged:
            s.commit()
    except BaseException:
        for s in staged:
            s.abort()
        raise


class _Tee(io.RawIOBase):
    """Reads the verified source and writes every byte read to the blob writer (if any)."""

    def __init__(self, src: VerifyingReader, writer: BlobWriter | None) -> None:
        self._src = src
        self._writer = writer

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        data = self._src.read(len(b))
        if self._writer is not None:
            self._writer.write(data)
        b[: len(data)] = data
        return len(data)

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        data = self._src.read(n)
        if self._writer is not None:
            self._writer.write(data)
        return data


def _decompressor(raw: BinaryIO, media_type: str) -> BinaryIO | None:
    media = MediaType.to_oci(media_type)
    if media == MediaType.LAYER_GZIP:
        return igzip_threaded.open(raw, "rb")  # type: ignore[return-value]
    if media == MediaType.LAYER_ZSTD:
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)  # type: ignore[return-value]
    return None


def _plain_tar(desc: Descriptor) -> bool:
    """An uncompressed layer: its diff_id is its digest, so checking the one checks the other
    (a model's layer: gigabytes that need no second hash)."""
    return (MediaType.to_oci(desc.media_type) == MediaType.LAYER_TAR
            or desc.media_type == "application/vnd.docker.image.rootfs.diff.tar")


def _hash_uncompressed(raw: BinaryIO, desc: Descriptor, where: str) -> str | None:
    """The diff_id of the compressed blob read from ``raw`` (None: a media type we cannot
    decompress). An uncompressed one never comes here: its diff_id is its digest (``_plain_tar``)."""
    h = hashlib.sha256()
    stream = _decompressor(raw, desc.media_type)
    if stream is None:
        while raw.read(CHUNK):
            pass
        return None
    try:
        with stream:
            while data := stream.read(CHUNK):
                h.update(data)
    except ArchiveError:
        raise
    except _CODEC_ERRORS as exc:
        raise _CorruptStream(f"{where}: layer {desc.digest} is not a valid {desc.media_type} stream "
                           f"({str(exc) or type(exc).__name__}); re-create the base image") from None
    while raw.read(CHUNK):  # anything after the compressed stream still counts for the digest
        pass
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class HeldIn:
    """Where the bytes ``stage_layer`` reads lie, for a blob kept by reference to them: in
    ``path`` (the file ``fd`` has open) from ``offset`` on: a layout's blob file (0), or an
    OCI archive's member (where its data starts in the archive)."""

    path: Path
    fd: int
    offset: int = 0
    size: int | None = None  # the run's length (an archive's member); None: to the file's end


def stage_layer(cache: BlobCache, stream: BinaryIO, desc: Descriptor, diff_id: str | None, where: str, *,
                held: HeldIn | None = None, defer: bool = False) -> StagedBlob:
    """Stage a layer blob read from ``stream`` for the cache, verifying digest, size and diff_id
    (with ``diff_id`` None: digest and size only, nothing decompressed): as a copy, or with
    ``held`` (where the bytes ``stream`` reads lie: a layout's blob, an archive's member) as a
    reference to them (``blobref``), so the one read that verifies it is all it costs and no
    second copy of a model's gigabytes is written.

    Example::

        staged = [stage_layer(cache, open_blob(d), d, diff_id, where) for d, diff_id in pairs]
        for s in staged: s.commit()

    A blob already cached costs nothing when its pair was verified before (or it is an
    uncompressed one), else one read of the cached copy. With ``defer`` (a push, whose
    registry checks every digest it is sent) a held uncompressed layer, whose diff_id is its
    digest, is not read now at all: it is held for this run only (``BlobCache.hold_unchecked``)
    and checked by whoever reads it, so a layout's model is read once, to send it. Raises DigestMismatchError,
    ArchiveError (a diff_id that does not match, a corrupt stream, a held file written to
    while it was read); the staged copy is removed on any error.
    """
    known = cache.verified_diff_id(desc.digest)
    if diff_id is not None and known is not None and known != diff_id:
        raise _mismatch(desc, where, diff_id, known)
    if cache.has_current(desc.digest):  # (a held blob whose files changed: this copy is taken instead)
        if diff_id is not None and known is None:
            verify_cached_diff_id(cache, desc, diff_id, where)
        return StagedBlob(cache, None, desc, None)
    if defer and held is not None:
        return _deferred(cache, held, desc, diff_id, where)
    before = os.fstat(held.fd) if held is not None else None
    reader = VerifyingReader(stream, Digest(desc.digest), desc.size, where)
    writer = cache.writer() if held is None else None
    try:
        tee = _Tee(reader, writer)
        if diff_id is None or known is not None or _plain_tar(desc):
            while tee.read(CHUNK):
                pass
            actual: str | None = None if diff_id is None else known or desc.digest  # (a plain tar's: reader.verify())
        else:
            try:
                actual = _hash_uncompressed(tee, desc, where)  # type: ignore[arg-type]
            except _CorruptStream:
                while tee.read(CHUNK):  # a blob that is not what its digest names is the first thing to say
                    pass
                reader.verify()
                raise
        reader.verify()
        if actual is not None and actual != diff_id:
            raise _mismatch(desc, where, diff_id, actual)
        record = _held(held, before, os.fstat(held.fd), desc, where) if held is not None else None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return StagedBlob(cache, writer, desc, actual, record)


def _deferred(cache: BlobCache, held: HeldIn, desc: Descriptor, diff_id: str | None, where: str) -> StagedBlob:
    """A layer held as it lies, unread: its size is checked against the descriptor's, and its
    bytes by whoever reads them. An uncompressed layer's diff_id is its digest (checked here
    against the config's); a compressed one's is checked by the push (``BlobCache.defer_check``),
    on a thread beside the uploads of the layers that need none (a model's), and before its
    own upload: so a push from a fresh cache starts sending the model at once instead of first
    reading and decompressing every compressed layer, and a lying layer is still never sent."""
    check = None
    if _plain_tar(desc):
        if diff_id is not None and diff_id != desc.digest:
            raise _mismatch(desc, where, diff_id, desc.digest)
    elif diff_id is not None:
        check = (diff_id, lambda: _check_deferred(cache, desc, diff_id, where))
    st = os.fstat(held.fd)
    size = held.size if held.size is not None else st.st_size - held.offset
    if size != desc.size:
        raise ArchiveError(f"{where}: blob {desc.digest} is {size} bytes, its descriptor says {desc.size}: "
                           "the image is corrupt; re-create it")
    return StagedBlob(cache, None, desc, None, unchecked=_held(held, st, st, desc, where), check=check)


def _check_deferred(cache: BlobCache, desc: Descriptor, diff_id: str, where: str) -> None:
    """The diff_id check of a compressed layer held unchecked: read (and so hashed: its digest is
    checked too), decompressed and compared; passed, the pair is remembered and the blob
    recorded as any held one."""
    _read_diff_id(cache, desc, diff_id, where)
    cache.confirm_unchecked(desc.digest)


def _held(held: HeldIn, before: os.stat_result | None, after: os.stat_result, desc: Descriptor,
          where: str) -> RefRecord:
    """The record of a blob held by reference to the bytes it was verified from, as they were then."""
    if before is None or fingerprint_of(before) != fingerprint_of(after):
        raise ArchiveError(f"{where}: blob {desc.digest} was written to while it was read; read the image "
                           "again once nothing writes to it")
    whole = held.offset == 0 and after.st_size == desc.size
    part = FilePart(str(held.path.absolute()), desc.size, stamp_of(after), Digest(desc.digest).hex,
                    offset=held.offset, file_size=None if whole else after.st_size)
    return RefRecord.build(desc.digest, [part])


def verify_cached_diff_id(cache: BlobCache, desc: Descriptor, diff_id: str, where: str) -> None:
    """Check a cached layer blob against ``diff_id`` once, remembering the verified pair."""
    known = cache.verified_diff_id(desc.digest)
    if known is not None:
        if known != diff_id:
            raise _mismatch(desc, where, diff_id, known)
        return
    _read_diff_id(cache, desc, diff_id, where)


def _read_diff_id(cache: BlobCache, desc: Descriptor, diff_id: str, where: str) -> None:
    """Check that a cached blob unpacks to ``diff_id``, and remember the pair when it does: a
    compressed one is read (one held unchecked is hashed as it is read) and decompressed; an
    uncompressed one's diff_id is its digest (its copy was checked when stored, and a held one
    is hashed whenever it is read)."""
    if _plain_tar(desc):
        actual: str | None = desc.digest
    else:
        with cache.open(desc.digest) as f:
            actual = _hash_uncompressed(f, desc, where)
    if actual is None:  # a media type we cannot decompress
        return
    if actual != diff_id:
        raise _mismatch(desc, where, diff_id, actual)
    cache.remember_diff_id(desc.digest, actual)
