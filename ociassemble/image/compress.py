"""Layer compression: parallel gzip (libdeflate, or zlib-ng Huffman-only), zstd, or none, and the automatic choice.

A layer's compressed bytes are a function of its uncompressed stream and the pinned
codec wheels alone: the same in every process, with any number of cores, on x86-64 at
any SIMD level and on aarch64. gzip is cut in fixed 1 MiB blocks, each a gzip member
compressed by libdeflate (stateless, documented to give the same output on every
CPU), or, for a layer whose sample barely compresses, Huffman-coded by zlib-ng (no
match search at all, so nothing CPU-specific); zstd writes one single-threaded frame. The codecs come from wheels pinned in
pyproject.toml, so a machine's system zlib plays no part. (ISA-L, used before, failed
this twice: its x86 level-1/2 body hashed an address into one slot per block, so a
block rarely compressed differently per process, and its aarch64 deflate is another
algorithm; docs/reproducibility.md.)

The work is a pipeline of threads, so one layer uses every core: the tar stream is read
on one thread (``readahead.prefetch``), hashed for the diff_id on the caller's, compressed on
a pool (gzip) or its own thread (zstd), and hashed for the digest and written on another
(``ThreadedSink``); hashlib, libdeflate, zstd and file I/O all release the GIL.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

import deflate
import zstandard
from zlib_ng import zlib_ng

from ..errors import UsageError
from .oci import MediaType

__all__ = ["Compression", "compress_stream", "choose_compression", "COMPRESSIONS", "ThreadedSink"]

COMPRESSIONS = ("auto", "gzip", "zstd", "none")

#: gzip is written as independent deflate blocks of this many input bytes (as pigz
#: does), so blocks compress on all cores and the output does not depend on how many.
GZIP_BLOCK = 1 << 20
#: libdeflate level 1: on float32 weights 4x zlib -6's speed per core at a smaller size
#: (0.9245 vs 0.9262); on Python sources 0.253 vs zlib -6's 0.2225 at 6x the speed
#: (docs/performance.md). Levels 0-12; 6 gives zlib -6's ratio, 9-12 better.
DEFAULT_GZIP_LEVEL = 1
GZIP_LEVELS = range(0, 13)
#: Huffman-only gzip (zlib-ng, ``Z_HUFFMAN_ONLY``): each byte coded alone, no match search.
#: On float32 weights the same size as libdeflate level 1 (0.9245 of the input, pigz -6's
#: 0.9262) at 1.4x its speed per core; on text far worse, so only picked for layers whose
#: sample saves under ``AUTO_MIN_SAVING``. memLevel 9: the biggest symbol buffer, so the
#: fewest Huffman tables (each one costs ~100 bytes). Level 1 only sets the header's XFL.
HUFFMAN_MEM_LEVEL = 9
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
    #: gzip only: members written Huffman-only by zlib-ng instead of by libdeflate. Never
    #: asked for: ``choose_compression`` picks it for a gzip layer at the default level
    #: whose sample barely compresses (weights), where LZ matches buy nothing.
    huffman: bool = False

    @classmethod
    def parse(cls, codec: str, level: int | None = None) -> "Compression":
        if codec not in COMPRESSIONS:
            raise UsageError(f"unknown compression {codec!r}: use one of {', '.join(COMPRESSIONS)}")
        if codec == "gzip":
            lvl = DEFAULT_GZIP_LEVEL if level is None else level
            if lvl not in GZIP_LEVELS:
                raise UsageError(f"gzip level {lvl} out of range: libdeflate levels are 0 to 12 (default 1; 6 matches gzip -6's size)")
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
        if self.codec == "gzip" and self.huffman:
            return f"gzip-huffman-m{GZIP_BLOCK}-mem{HUFFMAN_MEM_LEVEL}-zlibng-{zlib_ng.ZLIBNG_VERSION}"
        if self.codec == "gzip":
            return f"gzip{self.level}-m{GZIP_BLOCK}-libdeflate-py{deflate.__version__}"
        if self.codec == "zstd":
            return f"zstd{self.level}-st-{'.'.join(map(str, zstandard.ZSTD_VERSION))}"
        return self.codec


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


def _gzip_member(data: bytes, level: int) -> bytes:
    """One block as a whole gzip member (header, raw deflate, CRC-32, size), by libdeflate.

    libdeflate compresses a buffer in one call, with no state kept between calls and no
    CPU-specific choices in its output (its README: the same output on all CPU
    architectures since v0.8; its vector code only speeds up the search): the member's
    bytes depend on ``data`` and ``level`` alone. It releases the GIL, so blocks compress
    on every core. The header it writes carries no name and mtime 0.
    """
    return deflate.gzip_compress(data, level)


def _huffman_member(data: bytes, level: int) -> bytes:
    """One block as a whole gzip member, Huffman-coded by zlib-ng (no LZ77 matches).

    A fresh stream per block, so nothing carries over between blocks. Huffman-only
    deflate uses none of zlib-ng's CPU-dispatched match finders or hashes: the symbol
    counts, the code lengths (zlib's tree builder, plain C) and the block boundaries
    (where the symbol buffer, sized by memLevel, fills) depend on ``data`` alone, so the bytes are the
    same at every x86 SIMD level and on aarch64 (tests/unit/test_codec_determinism.py,
    tests/e2e/test_cross_arch.py). The header: no name, mtime 0, OS 3 (Unix) everywhere.
    The stdlib-style ``compress`` releases the GIL.
    """
    c = zlib_ng.compressobj(1, zlib_ng.DEFLATED, 31, HUFFMAN_MEM_LEVEL, zlib_ng.Z_HUFFMAN_ONLY)
    return c.compress(data) + c.flush()


def _weights_member(data: bytes, level: int) -> bytes:
    """A block of a layer that barely compresses: Huffman-only, unless Huffman coding saves
    ``AUTO_MIN_SAVING`` or more (text, a run of zeros: where LZ77 may find much more), then
    the smaller of that and libdeflate's member (Huffman's on a tie).

    So a layer of weights plus some text is no bigger than libdeflate would make it for the
    text, and weights cost one Huffman pass. The rule reads only the sizes of two members
    that are themselves the same everywhere, so its choice is too.
    """
    huff = _huffman_member(data, level)
    if len(huff) > (1 - AUTO_MIN_SAVING) * len(data):
        return huff
    lz = _gzip_member(data, level)
    return lz if len(lz) < len(huff) else huff


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


def gzip_workers() -> int:
    """Codec threads for gzip: one per core (the codec is the slowest stage), at most 8."""
    return max(1, min(os.cpu_count() or 1, 8))


def _gzip_stream(chunks: Iterable[bytes], sink: Sink, level: int, on_raw: Callable[[bytes], None], pool: ThreadPoolExecutor,
                 member: Callable[[bytes, int], bytes] = _gzip_member) -> None:
    """A multi-member gzip stream: one member per ``GZIP_BLOCK`` of input, in order.

    RFC 1952 (2.2): "A gzip file consists of a series of "members"", and every gzip
    reader that unpacks layers (Go's compress/gzip, pigz, gzip, zlib's gunzip, Python's
    gzip and isal) reads them all. Independent members are what makes the output the
    same whatever the number of threads; an empty stream is one empty member.
    """
    pending: deque[Future[bytes]] = deque()
    max_pending = 2 * gzip_workers()
    wrote = False

    def drain(keep: int) -> None:
        while len(pending) > keep:
            sink.write(pending.popleft().result())

    def raw() -> Iterator[bytes]:
        for chunk in chunks:
            on_raw(chunk)
            yield chunk

    for block in _blocks(raw(), GZIP_BLOCK):
        pending.append(pool.submit(member, block, level))
        wrote = True
        drain(max_pending)
    drain(0)
    if not wrote:
        sink.write(member(b"", level))


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
        # a codec thread per core: libdeflate is the pipeline's slowest stage, and the
        # members are independent, so the thread count cannot change a byte
        level = DEFAULT_GZIP_LEVEL if compression.level is None else compression.level
        with ThreadPoolExecutor(max_workers=gzip_workers(), thread_name_prefix="gzip") as pool:
            _gzip_stream(chunks, sink, level, on_raw, pool, _weights_member if compression.huffman else _gzip_member)
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
    """Resolve ``auto``, and pick gzip's encoder: by whether a sample barely compresses.

    ``samples`` are a few slices of the layer's biggest files; compressing them with
    libdeflate level 1 (the same bytes on every machine, so the choice is too) costs
    milliseconds and predicts the whole layer's ratio well for
    the homogeneous data (weights, arrays) that dominates big layers.
    Such a layer is stored uncompressed under ``auto``; with gzip asked for at the default
    level it is written Huffman-only (the same size there, faster), else by libdeflate.
    """
    if requested.codec not in ("auto", "gzip"):
        return requested
    gz = Compression.parse("gzip", requested.level)
    if total_size < AUTO_SMALL_LAYER or (requested.codec == "gzip" and gz.level != DEFAULT_GZIP_LEVEL):
        return gz
    raw = comp = 0
    for s in samples:
        raw += len(s)
        comp += len(deflate.deflate_compress(s, 1))
    if raw and 1 - comp / raw < AUTO_MIN_SAVING:
        return Compression("gzip", gz.level, huffman=True) if requested.codec == "gzip" else Compression("none")
    return gz
