"""Layer compression: parallel gzip (ISA-L), zstd, or none, and the automatic choice.

Every codec here is deterministic: the same uncompressed stream always gives the
same compressed bytes, whatever the number of cores, because the work is split in
fixed-size blocks (gzip) or by zstd's own multi-thread mode, whose output does not
depend on the number of workers. The codecs come from wheels pinned in
pyproject.toml, so a machine's system zlib cannot change a digest.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

from isal import isal_zlib
import zstandard

from .errors import UsageError
from .oci import MediaType

__all__ = ["Compression", "compress_stream", "choose_compression", "COMPRESSIONS"]

COMPRESSIONS = ("auto", "gzip", "zstd", "none")

#: gzip is written as independent deflate blocks of this many input bytes (as pigz
#: does), so blocks compress on all cores and the output does not depend on how many.
GZIP_BLOCK = 1 << 20
#: ISA-L level 1: on float32 weights, 16x zlib's speed at zlib -6's ratio (measured).
DEFAULT_GZIP_LEVEL = 1
DEFAULT_ZSTD_LEVEL = 3
#: zstd workers: any value >= 1 gives identical output (zstd's MT format), so this
#: only sets speed, never the digest.
ZSTD_WORKERS = 2
#: auto: a layer whose sampled content shrinks by less than this fraction is stored
#: uncompressed (float32 weights save ~7 %; the pull-time saving is not worth the CPU).
AUTO_MIN_SAVING = 0.10
#: auto: layers smaller than this are always gzipped (cheap, and universally accepted).
AUTO_SMALL_LAYER = 16 << 20


@dataclass(frozen=True)
class Compression:
    """A resolved codec and level; ``id`` names it in cache keys and history."""

    codec: str  # "gzip" | "zstd" | "none"
    level: int | None = None

    @classmethod
    def parse(cls, codec: str, level: int | None = None) -> "Compression":
        if codec not in COMPRESSIONS:
            raise UsageError(f"unknown compression {codec!r}: use one of {', '.join(COMPRESSIONS)}")
        if codec == "gzip":
            lvl = DEFAULT_GZIP_LEVEL if level is None else level
            if not 0 <= lvl <= 3:
                raise UsageError(f"gzip level {lvl} out of range: ISA-L levels are 0 to 3 (1 matches gzip -6's ratio)")
            return cls("gzip", lvl)
        if codec == "zstd":
            lvl = DEFAULT_ZSTD_LEVEL if level is None else level
            if not 1 <= lvl <= 19:
                raise UsageError(f"zstd level {lvl} out of range: use 1 to 19")
            return cls("zstd", lvl)
        if codec == "none":
            return cls("none", None)
        return cls("auto", level)

    @property
    def media_type(self) -> str:
        return {"gzip": MediaType.LAYER_GZIP, "zstd": MediaType.LAYER_ZSTD, "none": MediaType.LAYER_TAR}[self.codec]

    @property
    def id(self) -> str:
        if self.codec == "gzip":
            return f"gzip{self.level}-b{GZIP_BLOCK}-isal-{_isal_version()}"
        if self.codec == "zstd":
            return f"zstd{self.level}-mt-{'.'.join(map(str, zstandard.ZSTD_VERSION))}"
        return self.codec


def _isal_version() -> str:
    import isal

    return getattr(isal, "__version__", "?")


class Sink(Protocol):
    def write(self, data: bytes | memoryview) -> int: ...


_GZIP_HEADER = bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF])  # no name, mtime 0, OS unknown


def _deflate_block(data: bytes, level: int, last: bool) -> bytes:
    c = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)
    out = c.compress(data)
    # A sync flush ends a block on a byte boundary, so independently compressed
    # blocks concatenate into one valid deflate stream.
    return out + c.flush(isal_zlib.Z_FINISH if last else isal_zlib.Z_SYNC_FLUSH)


def _gzip_stream(chunks: Iterable[bytes], sink: Sink, level: int, on_raw: Callable[[bytes], None], pool: ThreadPoolExecutor) -> None:
    sink.write(_GZIP_HEADER)
    crc = 0
    total = 0
    pending: deque[Future[bytes]] = deque()
    max_pending = 2 * (os.cpu_count() or 2)
    buf = bytearray()

    def submit(block: bytes, last: bool) -> None:
        pending.append(pool.submit(_deflate_block, block, level, last))
        while len(pending) > max_pending:
            sink.write(pending.popleft().result())

    for chunk in chunks:
        on_raw(chunk)
        crc = isal_zlib.crc32(chunk, crc)
        total += len(chunk)
        buf += chunk
        while len(buf) > GZIP_BLOCK:
            submit(bytes(buf[:GZIP_BLOCK]), False)
            del buf[:GZIP_BLOCK]
    submit(bytes(buf), True)
    while pending:
        sink.write(pending.popleft().result())
    sink.write(struct.pack("<II", crc & 0xFFFFFFFF, total & 0xFFFFFFFF))


def compress_stream(
    chunks: Iterable[bytes],
    sink: Sink,
    compression: Compression,
    on_raw: Callable[[bytes], None],
) -> None:
    """Compress ``chunks`` into ``sink``, calling ``on_raw`` on each uncompressed chunk.

    ``on_raw`` runs on the calling thread while the codec works on the others: that is
    where the diff_id is hashed, overlapped with compression.
    """
    if compression.codec == "none":
        for chunk in chunks:
            on_raw(chunk)
            sink.write(chunk)
        return
    if compression.codec == "gzip":
        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="gzip") as pool:
            _gzip_stream(chunks, sink, compression.level or 0, on_raw, pool)
        return
    if compression.codec == "zstd":
        params = zstandard.ZstdCompressionParameters.from_level(
            compression.level or DEFAULT_ZSTD_LEVEL, threads=ZSTD_WORKERS, write_checksum=True
        )
        cctx = zstandard.ZstdCompressor(compression_params=params)
        with cctx.stream_writer(_SinkAdapter(sink), closefd=False, write_return_read=True) as w:
            for chunk in chunks:
                on_raw(chunk)
                w.write(chunk)
        return
    raise UsageError(f"compression {compression.codec!r} must be resolved before writing")


class _SinkAdapter:
    """What zstandard's stream_writer needs from a sink (it probes a few file methods)."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def write(self, data: bytes) -> int:
        self._sink.write(data)
        return len(data)

    def flush(self) -> None:
        pass


def choose_compression(samples: Iterable[bytes], total_size: int, requested: Compression) -> Compression:
    """Resolve ``auto``: gzip unless a sample of the content shows it barely compresses.

    ``samples`` are a few slices of the layer's biggest files; compressing them with
    ISA-L level 1 costs milliseconds and predicts the whole layer's ratio well for
    the homogeneous data (weights, arrays) that dominates big layers.
    """
    if requested.codec != "auto":
        return requested
    gz = Compression.parse("gzip", requested.level)
    if total_size < AUTO_SMALL_LAYER:
        return gz
    raw = comp = 0
    for s in samples:
        raw += len(s)
        comp += len(isal_zlib.compress(s, 1))
    if raw and 1 - comp / raw < AUTO_MIN_SAVING:
        return Compression("none")
    return gz
