"""Layer compression: parallel gzip (ISA-L), zstd, or none, and the automatic choice.

The same uncompressed stream gives the same compressed bytes whatever the number of
cores, because gzip's work is split in fixed-size blocks and zstd writes one
single-threaded frame; the codecs come from wheels pinned in pyproject.toml, so a
machine's system zlib cannot change a digest. One exception, measured and not yet
explained: ISA-L gzip, rarely, per process (see compress_stream and
docs/reproducibility.md); zstd and uncompressed layers are exact.

The work is a pipeline of threads, so one layer uses every core: the tar stream is read
on one thread (``layer.prefetch``), hashed for the diff_id on the caller's, compressed on
a pool (gzip) or its own thread (zstd), and hashed for the digest and written on another
(``ThreadedSink``); hashlib, ISA-L, zstd and file I/O all release the GIL.
"""

from __future__ import annotations

import os
import queue
import struct
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

from isal import isal_zlib
import zstandard

from .errors import UsageError
from .oci import MediaType

__all__ = ["Compression", "compress_stream", "choose_compression", "COMPRESSIONS", "ThreadedSink"]

COMPRESSIONS = ("auto", "gzip", "zstd", "none")

#: gzip is written as independent deflate blocks of this many input bytes (as pigz
#: does), so blocks compress on all cores and the output does not depend on how many.
GZIP_BLOCK = 1 << 20
#: Codec threads for gzip: see compress_stream.
GZIP_WORKERS = 1
#: ISA-L level 1: on float32 weights, 16x zlib's speed at zlib -6's ratio (measured).
DEFAULT_GZIP_LEVEL = 1
DEFAULT_ZSTD_LEVEL = 3
#: zstd runs single-threaded (one frame, on its own thread, beside the hashing): on
#: float32 weights zstd's multi-thread mode spent twice the CPU for the same output size
#: (242 vs 455 MB per CPU-second at level 3, measured), and needed ~90 MB of job buffers.
ZSTD_WORKERS = 0
#: How many chunks may wait between two stages of the pipeline (codec, blob writer).
STAGE_DEPTH = 4
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
            return f"zstd{self.level}-st-{'.'.join(map(str, zstandard.ZSTD_VERSION))}"
        return self.codec


def _isal_version() -> str:
    import isal

    return getattr(isal, "__version__", "?")


#: glibc malloc settings for the pipeline's ~1 MiB buffers (mallopt's M_MMAP_THRESHOLD,
#: M_TRIM_THRESHOLD). With the defaults, buffers freed on one thread are handed back to the
#: kernel and faulted in again on the next allocation: ~110k page faults and ~0.4 s of CPU
#: per GiB gzipped (measured). Kept in the process instead, they are reused; the peak
#: memory is unchanged.
_MALLOC_MMAP_THRESHOLD = 8 << 20
_MALLOC_TRIM_THRESHOLD = 64 << 20
_malloc_tuned = False


def _keep_freed_buffers() -> None:
    """Apply the malloc settings above once (glibc only; elsewhere nothing happens)."""
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, _MALLOC_MMAP_THRESHOLD)
    mallopt(m_trim_threshold, _MALLOC_TRIM_THRESHOLD)


class Sink(Protocol):
    def write(self, data: bytes | memoryview) -> int: ...


class ThreadedSink:
    """A sink whose ``write`` calls run in order on their own thread, through a bounded queue.

    So the writer's own work (hashing the blob, the write syscall) overlaps the caller's.
    The data handed to ``write`` must not be changed afterwards. An error on the thread is
    raised by the next ``write`` or by ``close``; ``abort`` stops without raising.
    Memory: at most ``depth`` chunks wait.

    Example::

        sink = ThreadedSink(blob_writer.write)
        try:
            for chunk in chunks:
                sink.write(chunk)
            sink.close()   # waits for the last write; raises the thread's error if any
        except BaseException:
            sink.abort()
            raise
    """

    _END = object()

    def __init__(self, write: Callable[[bytes], object], depth: int = STAGE_DEPTH, name: str = "blob-writer") -> None:
        self._write = write
        self._q: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is self._END:
                return
            if self._error is None:
                try:
                    self._write(item)  # type: ignore[arg-type]
                except BaseException as exc:  # noqa: BLE001 - handed to the producer
                    self._error = exc  # keep draining, so a producer never blocks on a dead thread

    def write(self, data: bytes | memoryview) -> int:
        if self._error is not None:
            raise self._error
        self._q.put(data)
        return len(data)

    def close(self) -> None:
        self._q.put(self._END)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        self._error = self._error or _Aborted()
        self._q.put(self._END)
        self._thread.join()


class _Aborted(Exception):
    pass


_GZIP_HEADER = bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF])  # no name, mtime 0, OS unknown

#: Ends the deflate stream after the last sync-flushed block: an empty final block
#: with fixed Huffman codes (BFINAL=1, BTYPE=01, end-of-block), as zlib writes it.
_DEFLATE_END = b"\x03\x00"


def _deflate_block(data: bytes, level: int) -> tuple[bytes, int]:
    """One block as raw deflate ending on a byte boundary (sync flush), and its CRC-32.

    A fresh ISA-L stream per block, so a block's bytes depend on nothing but the block.
    ``_ParallelCompress`` is what isal's own threaded gzip writer uses (isal is pinned
    exactly); it runs deflate and the CRC outside the GIL.
    """
    # deflate's worst case is stored blocks (+5 bytes per 64 KiB); ISA-L level 0's
    # Huffman-only blocks can grow ~25 % on random bytes (isal allows 2x for it too)
    bound = len(data) * (2 if level == 0 else 1) + len(data) // 10 + 1024
    return isal_zlib._ParallelCompress(buffersize=bound, level=level).compress_and_crc(data, b"")


def _blocks(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The stream cut in blocks of exactly ``size`` bytes (the last one shorter).

    Chunks that already are one block pass through without a copy.
    """
    buf = bytearray()
    for chunk in chunks:
        if not buf and len(chunk) == size:
            yield chunk
            continue
        buf += chunk
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


def _gzip_stream(chunks: Iterable[bytes], sink: Sink, level: int, on_raw: Callable[[bytes], None], pool: ThreadPoolExecutor) -> None:
    sink.write(_GZIP_HEADER)
    crc = 0
    total = 0
    pending: deque[tuple[Future[tuple[bytes, int]], int]] = deque()
    max_pending = 2 * (os.cpu_count() or 2)

    def drain(keep: int) -> None:
        nonlocal crc
        while len(pending) > keep:
            fut, n = pending.popleft()
            data, block_crc = fut.result()
            crc = isal_zlib.crc32_combine(crc, block_crc, n)
            sink.write(data)

    def raw() -> Iterator[bytes]:
        nonlocal total
        for chunk in chunks:
            on_raw(chunk)
            total += len(chunk)
            yield chunk

    for block in _blocks(raw(), GZIP_BLOCK):
        pending.append((pool.submit(_deflate_block, block, level), len(block)))
        drain(max_pending)
    drain(0)
    sink.write(_DEFLATE_END)
    sink.write(struct.pack("<II", crc & 0xFFFFFFFF, total & 0xFFFFFFFF))


def _zstd_stream(chunks: Iterable[bytes], sink: Sink, level: int, on_raw: Callable[[bytes], None]) -> None:
    params = zstandard.ZstdCompressionParameters.from_level(level, threads=ZSTD_WORKERS, write_checksum=True)
    cctx = zstandard.ZstdCompressor(compression_params=params)
    writer = cctx.stream_writer(_SinkAdapter(sink), closefd=False, write_return_read=True)
    # the codec on its own thread (zstandard releases the GIL), the diff_id hashed here
    stage = ThreadedSink(writer.write, name="zstd")
    try:
        for chunk in chunks:
            on_raw(chunk)
            stage.write(chunk)
        stage.close()
    except BaseException:
        stage.abort()
        raise
    writer.close()


def compress_stream(
    chunks: Iterable[bytes],
    sink: Sink,
    compression: Compression,
    on_raw: Callable[[bytes], None],
) -> None:
    """Compress ``chunks`` into ``sink``, calling ``on_raw`` on each uncompressed chunk.

    ``on_raw`` runs on the calling thread while the codec works on the others (a pool
    of block compressors for gzip, one thread for zstd): that is where the diff_id is
    hashed, overlapped with compression. Chunks must not be changed once handed over.
    """
    _keep_freed_buffers()
    if compression.codec == "none":
        for chunk in chunks:
            on_raw(chunk)
            sink.write(chunk)
        return
    if compression.codec == "gzip":
        # One codec thread: on 2 cores it was no slower than two (501 vs 446 MB/s on the
        # bench's 1 GiB model), since the other core reads, hashes the diff_id and hashes
        # and writes the blob. NOT for determinism, as first thought: ISA-L level 1 gives a
        # 1 MiB block a different valid encoding about once in 18,000 blocks *per process*
        # whatever the threads (one thread or two, or a C program: same rate; within one
        # process always the same; 60/60 alike with ASLR off). docs/reproducibility.md.
        with ThreadPoolExecutor(max_workers=GZIP_WORKERS, thread_name_prefix="gzip") as pool:
            _gzip_stream(chunks, sink, compression.level or 0, on_raw, pool)
        return
    if compression.codec == "zstd":
        _zstd_stream(chunks, sink, compression.level or DEFAULT_ZSTD_LEVEL, on_raw)
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
