"""Building a layer: a file tree or a base tarball becomes one cached layer, built at most once.

Rules (the layer format; ``LAYER_FORMAT`` names them in cache keys, bump it on change):
what goes in and with which kind, mode and owner is the scan's (``scan``: entries
sorted by in-image path, bytes order, parents first; uid/gid 0; directories 0755,
files 0755 if any execute bit was set else 0644, symlinks 0777; no xattrs; hard links
kept; escaping symlinks and special files refused); how the entries become bytes is
the tar stream's (``tarstream``: PAX headers, every mtime = the build epoch,
``SOURCE_DATE_EPOCH`` or 0, big files' data aligned for reflinks); then the codec's
(``compress``).

The tar stream is hashed (diff_id) and compressed (digest) in one pass, with file
reads running ahead on a separate thread (``readahead``); a layer is never held in
memory. The layer index (``BlobCache.get_layer``) maps a tree's fingerprint to the
layer built from it, so an unchanged tree is not read again.

An uncompressed layer (``none``, or ``auto`` when it picks none) of the user's files is
not copied into the cache: it is recorded by reference (``blobref``), our headers plus
each file's path, fingerprint and content digest, and read back from the files when an
output or a push needs its bytes.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import zstandard
from isal import isal_zlib

from ..errors import ArchiveError, InputError
from .blobref import FilePart, RefRecord
from .cache import BlobCache
from .compress import Compression, ThreadedSink, choose_compression, compress_stream
from .diffid import StagedBlob
from .onepass import OnePassReader
from .digest import CHUNK, Digest
from .oci import Descriptor, MediaType, canonical_json
from .readahead import prefetch
from .scan import LayerSource, scan_sources
from .tarcheck import TarballChecker
from .tarstream import ALIGN, ALIGN_MIN_SIZE, Entry, stream_parts, tar_chunks

#: The layer's public face; the scan's and the tar stream's names are re-exported so
#: that callers import a layer's whole vocabulary from here.
__all__ = [
    "LAYER_FORMAT",
    "ALIGN",
    "ALIGN_MIN_SIZE",
    "LayerSource",
    "Entry",
    "BuiltLayer",
    "RemoteLayerIndex",
    "LayerUploader",
    "scan_sources",
    "tar_chunks",
    "build_layer",
    "layer_from_tarball",
    "layer_from_stream",
]

#: 5: forced gzip of a layer whose sample barely compresses is Huffman-only (zlib-ng); the
#: bytes of every other layer are as in 4. 4: the data of files of ALIGN_MIN_SIZE or more
#: starts at a multiple of ALIGN in the tar (a tree of smaller files has the same tar as
#: before). 3: gzip as one libdeflate gzip member per 1 MiB block (was 2: ISA-L raw deflate
#: blocks, sync-flushed, in one member; 1: a fresh zlib compressobj per block); zstd in one
#: single-threaded frame.
LAYER_FORMAT = "ociassemble-layer-5"
#: Names the rules a base tarball was checked by (``tarcheck``) in its layer-index key:
#: a tarball accepted before the checks existed is checked again, not reused unchecked.
TARBALL_CHECK = "tarcheck-1"
#: auto compression samples this many bytes from each of a layer's biggest files.
SAMPLE_BYTES = 256 << 10
SAMPLE_FILES = 8


@dataclass(frozen=True)
class BuiltLayer:
    """A layer: its descriptor (compressed blob) and diff_id (uncompressed).

    Its blob is in the local cache, unless the layer was taken from a registry layer
    cache: then ``origin`` is the ``registry/repository`` holding the blob and ``fetch``
    (an ``image.BlobFetcher``) downloads it when an output needs the bytes.
    ``reused``: from the local layer index (nothing read or written). ``held``: written by
    this build as a reference to the files (``blobref``), not as a blob.
    """

    descriptor: Descriptor
    diff_id: str
    reused: bool = False
    compression: str = ""
    uncompressed_size: int = 0
    origin: str | None = None
    fetch: Callable[..., None] | None = field(default=None, compare=False, repr=False)
    held: bool = False

    @property
    def outcome(self) -> str:
        """What this build did for it: ``compressed``, ``held`` (by reference: nothing of the files
        written) or ``uncompressed`` (stored as a plain tar), else where it came from: ``reused``
        (local index) or ``registry`` (layer cache)."""
        if self.origin is not None:
            return "registry"
        if self.reused:
            return "reused"
        if self.held:
            return "held"
        return "uncompressed" if self.descriptor.media_type == MediaType.LAYER_TAR else "compressed"

    def to_record(self) -> dict[str, object]:
        return {"digest": self.descriptor.digest, "size": self.descriptor.size,
                "media_type": self.descriptor.media_type, "diff_id": self.diff_id,
                "compression": self.compression, "uncompressed_size": self.uncompressed_size}

    @classmethod
    def from_record(cls, r: dict[str, object]) -> "BuiltLayer":
        return cls(Descriptor(str(r["media_type"]), str(r["digest"]), int(r["size"])),  # type: ignore[arg-type]
                   str(r["diff_id"]), True, str(r.get("compression", "")), int(r.get("uncompressed_size", 0)))  # type: ignore[arg-type]


def _samples(entries: Sequence[Entry]) -> Iterator[bytes]:
    big = sorted((e for e in entries if e.kind == "file" and e.size), key=lambda e: -e.size)[:SAMPLE_FILES]
    for e in big:
        assert e.source
        with open(e.source, "rb") as f:
            f.seek(e.size // 2)
            yield f.read(SAMPLE_BYTES)


class _DirectSink:
    """``ThreadedSink``'s face, writing on the caller's thread."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self.write = write

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class DiffIdMismatch(Exception):
    """``_write_layer``'s stream did not hash to the expected diff_id (nothing was kept)."""

    def __init__(self, actual: str) -> None:
        super().__init__(actual)
        self.actual = actual


def _write_layer(cache: BlobCache, chunks: Iterator[bytes], compression: Compression,
                 expect_diff_id: str | None = None, staged: list[StagedBlob] | None = None) -> BuiltLayer:
    """Hash (diff_id), compress, hash again (digest) and write a tar stream, all at once.

    The diff_id is hashed on this thread, the codec works on its own threads and the
    compressed blob is hashed and written on another (``ThreadedSink``). An uncompressed
    layer's digest is its diff_id, so its bytes are hashed once, not twice, and written
    from this thread (a writer thread gained nothing there: the buffers freed on another
    thread cost more page faults than the write it overlapped, measured).
    With ``expect_diff_id``, a stream hashing to anything else raises ``DiffIdMismatch``
    before the blob is committed. With ``staged``, the blob is not committed but added
    there (a ``diffid.StagedBlob``): the caller commits it once a whole image is verified.
    """
    diff = hashlib.sha256()
    raw_size = 0

    def on_raw(chunk: bytes) -> None:
        nonlocal raw_size
        diff.update(chunk)
        raw_size += len(chunk)

    stored_raw = compression.codec == "none"
    w = cache.writer(hashed=not stored_raw)
    try:
        sink = _DirectSink(w.write) if stored_raw else ThreadedSink(w.write)
        try:
            compress_stream(chunks, sink, compression, on_raw)
            sink.close()
        except BaseException:
            sink.abort()
            raise
        diff_id = Digest("sha256:" + diff.hexdigest())
        if expect_diff_id is not None and str(diff_id) != expect_diff_id:
            raise DiffIdMismatch(str(diff_id))
        digest = diff_id if stored_raw else w.digest
        size = w.size
        desc = Descriptor(compression.media_type, str(digest), size)
        if staged is not None:
            staged.append(StagedBlob(cache, w, desc, str(diff_id)))
        else:
            w.commit(digest)
            cache.remember_diff_id(digest, str(diff_id))
    except BaseException:
        w.abort()
        raise
    return BuiltLayer(desc, str(diff_id), False, compression.id, raw_size)


def build_layer(
    cache: BlobCache,
    sources: Sequence[LayerSource],
    *,
    compression: Compression = Compression("auto"),
    epoch: int = 0,
    ignore: Callable[[Path], bool] | None = None,
    entries: Sequence[Entry] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    remote: "RemoteLayerIndex | None" = None,
    by_reference: bool = True,
    uploader: "LayerUploader | None" = None,
) -> BuiltLayer:
    """The layer for ``sources``: from the layer index if nothing changed, else written once.

    ``epoch`` is every entry's mtime: the build's timestamp (``Settings.epoch``, from
    ``$SOURCE_DATE_EPOCH``), given by the caller; this module reads no environment.
    The index key is the tree's fingerprint (every entry's metadata and stat stamp, as
    git's index uses), the epoch, the codec and ``LAYER_FORMAT``: an unchanged tree
    costs one ``lstat`` per file and no read. ``on_bytes(n)`` is told of each chunk of the
    tar stream as it is hashed and compressed (progress display; not called on a reuse).

    With ``remote`` (a registry layer cache), a layer the local index does not know is
    first only hashed (its diff_id: no compression, nothing written) and looked up
    there; a verified hit is returned as living in the registry (``BuiltLayer.origin``),
    anything else is built as usual (a miss costs that one extra read of the tree).

    An uncompressed layer is recorded by reference (no copy of the files written;
    see the module docs) unless ``by_reference`` is False: for trees that may not
    outlive the build (generated files, a base's rootfs folder), whose bytes are cached.

    With ``uploader`` (a push that builds: ``registry.speculative``), such a layer that
    neither index knows is not hashed here: the uploader streams it to the registry,
    hashing it in that same pass (``onepass``), and the record is only written once the
    registry accepted the blob, so a model is read once for build + push. A registry
    layer cache that is read keeps today's hash-then-look-up path (its hit saves the
    upload; see docs/performance.md).

    Raises InputError for missing, unreadable, special or escaping inputs.
    """
    if entries is None:
        entries = scan_sources(sources, ignore)
    requested = compression
    fingerprint = canonical_json({"format": LAYER_FORMAT, "epoch": epoch,
                                  "compression": [requested.codec, requested.level],
                                  "entries": [e.key() for e in entries]})
    key = hashlib.sha256(fingerprint).hexdigest()
    record = cache.get_layer(key)
    if record is not None:
        return BuiltLayer.from_record(record)
    total = sum(e.size for e in entries)
    resolved = choose_compression(_samples(entries), total, requested)
    by_ref = by_reference and resolved.codec == "none"
    files: dict[str, FilePart] | None = {} if by_ref else None
    hashed: tuple[str, int] | None = None

    def stream(files: dict[str, FilePart] | None = None) -> Iterator[bytes]:
        chunks = prefetch(tar_chunks(entries, epoch, files))
        return chunks if on_bytes is None else _reported(chunks, on_bytes)

    if by_ref and uploader is not None and not (remote is not None and remote.reading):
        built = _upload_by_reference(cache, entries, epoch, resolved, uploader, on_bytes)
        cache.put_layer(key, built.to_record())
        return built
    if by_ref or (remote is not None and remote.reading):
        hashed = _hash_stream(stream(files))
        if remote is not None and remote.reading:
            found = remote.find_layer(hashed[0], hashed[1], resolved)
            if found is not None:
                return found
    if by_ref:
        assert hashed is not None and files is not None
        built = _record_by_reference(cache, entries, epoch, files, hashed, resolved)
    else:
        built = _write_layer(cache, stream(), resolved)
    cache.put_layer(key, built.to_record())
    return built


def _record_by_reference(cache: BlobCache, entries: Sequence[Entry], epoch: int, files: dict[str, FilePart],
                         hashed: tuple[str, int], compression: Compression) -> BuiltLayer:
    """The uncompressed layer just hashed, recorded as its headers and files (nothing copied)."""
    diff_id, raw_size = hashed

    parts = stream_parts(entries, epoch)
    record = RefRecord.build(diff_id, (p if isinstance(p, bytes) else files[p.name] for p in parts))
    if record.size != raw_size:  # the headers are a pure function of the entries: cannot happen
        raise ArchiveError(f"layer {diff_id}: its recorded parts add up to {record.size} bytes, not {raw_size}")
    cache.put_ref(record)
    return BuiltLayer(Descriptor(compression.media_type, diff_id, raw_size), diff_id, False, compression.id, raw_size,
                      held=True)


def _upload_by_reference(cache: BlobCache, entries: Sequence[Entry], epoch: int, compression: Compression,
                         uploader: "LayerUploader", on_bytes: Callable[[int], None] | None) -> BuiltLayer:
    """The uncompressed layer sent to the registry while hashed (one read), then recorded
    by reference as ``_record_by_reference`` records it, less the files' own digests
    (``onepass``: those would be a second hash of every byte)."""
    with OnePassReader(entries, epoch) as reader:
        uploader.send(reader, on_bytes)
        record = reader.record()
    cache.put_ref(record)
    return BuiltLayer(Descriptor(compression.media_type, record.digest, record.size), record.digest, False,
                      compression.id, record.size, held=True)


class LayerUploader(Protocol):
    """Where a push that builds sends a new by-reference layer as it is read
    (``registry.speculative.SpeculativeUploader``).

    ``send`` reads ``reader`` to its end, uploading its bytes, and commits the blob under
    ``reader.digest`` once every byte was read; it raises (committing nothing) when the
    registry fails for good or a file changed (``SourceChangedError`` naming it).
    ``on_bytes(n)`` is told of the bytes as they are read (progress display).
    """

    def send(self, reader: OnePassReader, on_bytes: Callable[[int], None] | None) -> None: ...

    @property
    def workers(self) -> int:
        """How many layers may be read and sent at once (the push's blob concurrency)."""
        ...

    def push_early(self, image: object, cache: BlobCache) -> None:
        """Start pushing ``image``'s layers (the build so far) beside the new ones."""
        ...

    def abort(self) -> None:
        """Stop every upload under way at its next chunk, cancelling it (nothing committed)."""
        ...


class RemoteLayerIndex(Protocol):
    """A layer index kept elsewhere (``registry.layercache.RegistryLayerCache``).

    ``find_layer`` returns the layer whose uncompressed tar has ``diff_id`` (``size``
    bytes), compressed as ``compression``, when the index has it and its blob is
    verified to be there; else None (a miss, or an entry that failed verification,
    which it reports as a warning). It never raises for the index's own failures.
    ``reading`` is False when lookups are off (write-only, or the index gave up): then
    the layer is not hashed for it.
    """

    @property
    def reading(self) -> bool: ...

    def find_layer(self, diff_id: str, size: int, compression: Compression) -> BuiltLayer | None: ...


def _hash_stream(chunks: Iterator[bytes]) -> tuple[str, int]:
    """The diff_id and size of a tar stream, nothing else done with it."""
    h = hashlib.sha256()
    n = 0
    for chunk in chunks:
        h.update(chunk)
        n += len(chunk)
    return "sha256:" + h.hexdigest(), n


def _reported(chunks: Iterator[bytes], on_bytes: Callable[[int], None]) -> Iterator[bytes]:
    for chunk in chunks:
        on_bytes(len(chunk))
        yield chunk


#: What a corrupt compressed tarball raises while it is read (the codecs share no base class).
_TARBALL_ERRORS = (EOFError, OSError, ValueError, zlib.error, isal_zlib.error, zstandard.ZstdError)


def _tarball_chunks(path: Path) -> Iterator[bytes]:
    """The uncompressed bytes of a tarball that may be gzip-, zstd- or not compressed.

    Raises ArchiveError, naming the file, when it cannot be decompressed.
    """
    with open(path, "rb") as raw:
        magic = raw.read(4)
        raw.seek(0)
        if magic[:2] == b"\x1f\x8b":
            from isal import igzip_threaded

            stream = igzip_threaded.open(raw, "rb")
        elif magic == b"\x28\xb5\x2f\xfd":
            stream = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        else:
            stream = raw
        with stream:
            while True:
                try:
                    data = stream.read(CHUNK)
                except _TARBALL_ERRORS as exc:
                    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise ArchiveError(f"{path} is not a readable tar archive ({reason}); "
                                       "give a rootfs .tar, .tar.gz or .tar.zst") from None
                if not data:
                    return
                yield data


def layer_from_tarball(cache: BlobCache, path: Path, *, compression: Compression = Compression("gzip")) -> BuiltLayer:
    """A base rootfs tarball as one layer, its tar bytes kept exactly as they are.

    Every header is checked (``tarcheck.TarballChecker``: names, links, symlinks) on
    the reader thread as the bytes stream to the hasher and compressor, so the check
    costs no extra read; a refused or corrupt tarball leaves nothing in the cache.

    Raises ArchiveError naming the tarball and the refused entry; InputError if missing.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: no such base tarball; check the path") from None
    key = hashlib.sha256(canonical_json({"format": LAYER_FORMAT, "check": TARBALL_CHECK,
                                         "tarball": [str(path.resolve()), st.st_size,
                                                     st.st_mtime_ns, st.st_ctime_ns, st.st_ino],
                                         "compression": [compression.codec, compression.level]})).hexdigest()
    record = cache.get_layer(key)
    if record is not None:
        return BuiltLayer.from_record(record)
    resolved = choose_compression(iter(()), 0, compression) if compression.codec == "auto" else compression
    checker = TarballChecker(f"base tarball {path}")
    built = _write_layer(cache, prefetch(checker.checked(_tarball_chunks(path))), resolved)
    cache.put_layer(key, built.to_record())
    return built


def layer_from_stream(cache: BlobCache, chunks: Iterator[bytes], compression: Compression = Compression("gzip"),
                      samples: Iterable[bytes] = (), total: int = 0) -> BuiltLayer:
    """A layer from a tar stream made elsewhere, in ``CHUNK``-sized chunks (the last one shorter),
    with headers from ``tarstream.entry_headers``: what a layer of contents held in memory
    (Debian packages unpacked from their ``data.tar``) is written with. ``samples`` and ``total``
    decide ``auto`` as ``build_layer`` does (a few slices of the biggest files, the tree's size).
    """
    resolved = choose_compression(iter(samples), total, compression)
    return _write_layer(cache, prefetch(chunks), resolved)
