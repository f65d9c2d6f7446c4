"""A layer blob read as its tar stream: decompressed, hashed for the diff_id, corruption named.

The compressed bytes come through a ``VerifyingReader`` (checked against the layer
digest); the decompressed bytes are hashed while tarfile reads them, so the diff_id
is checked without a second pass. A codec's error on a truncated or corrupt stream
becomes ``CorruptStream``, which ``unpack`` reports as an ``ArchiveError``.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from typing import BinaryIO

import zstandard
from isal import igzip_threaded, isal_zlib

from ..errors import ArchiveError, OciAssembleError
from ..image.digest import CHUNK, VerifyingReader
from ..image.oci import MediaType

__all__ = ["CorruptStream", "TarStream", "decompressed"]

#: What a truncated or corrupt compressed stream raises (the codecs share no base class).
_CODEC_ERRORS = (EOFError, OSError, ValueError, zlib.error, isal_zlib.error, zstandard.ZstdError)


class CorruptStream(Exception):
    """The layer's byte stream cannot be decompressed or parsed."""


class TarStream:
    """Wraps a decompressed stream: hashes (diff_id) and turns codec errors into ``CorruptStream``."""

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
            raise CorruptStream(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
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


def decompressed(raw: VerifyingReader, media_type: str) -> BinaryIO:
    """``raw`` decompressed as its media type says (``raw`` itself for a plain tar).

    Raises ArchiveError for a media type that is no tar layer.
    """
    if media_type == MediaType.LAYER_GZIP:
        return igzip_threaded.open(_RawIO(raw), "rb")  # type: ignore[return-value]
    if media_type == MediaType.LAYER_ZSTD:
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)  # type: ignore[return-value]
    if media_type == MediaType.LAYER_TAR:
        return raw  # type: ignore[return-value]
    raise ArchiveError(f"layer media type {media_type!r} cannot be unpacked: expected a tar, tar+gzip or tar+zstd layer")
