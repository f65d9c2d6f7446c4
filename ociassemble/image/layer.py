"""Deterministic layers: a file tree becomes a tar stream whose bytes depend only on content.

Rules (the layer format; ``LAYER_FORMAT`` names them in cache keys, bump it on change):
entries sorted by in-image path (bytes order, parents first); PAX tar format as
written by the stdlib's ``TarInfo.tobuf``; every mtime = the build epoch
(``SOURCE_DATE_EPOCH``, default 0); uid/gid 0 with empty names; directories 0755,
files 0755 if any execute bit was set else 0644, symlinks 0777; no xattrs; hard
links inside one layer kept as links; symlinks kept, but a relative one that leads
outside the tree it came from is refused (absolute targets are in-image paths);
no entries for the parents of a destination (they may be symlinks in the base);
sockets, devices and FIFOs refused (a base rootfs directory may keep them); the data
of every file of ``ALIGN_MIN_SIZE`` or more starts at a multiple of ``ALIGN`` bytes of
the tar stream, padded to it by a PAX ``comment`` record (``_header``), so an output on
a filesystem with reflinks can share the file's blocks instead of copying them (``clone``).

The tar stream is hashed (diff_id) and compressed (digest) in one pass, with file
reads running ahead on a separate thread; a layer is never held in memory.

An uncompressed layer (``none``, or ``auto`` when it picks none) of the user's files is
not copied into the cache: it is recorded by reference (``blobref``), our headers plus
each file's path, fingerprint and content digest, and read back from the files when an
output or a push needs its bytes.
"""

from __future__ import annotations

import hashlib
import os
import queue
import stat
import tarfile
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import zstandard
from isal import isal_zlib

from ..errors import ArchiveError, InputError, UsageError
from .blobref import FilePart, RefRecord, stamp_of
from .cache import BlobCache
from .compress import Compression, ThreadedSink, choose_compression, compress_stream
from .diffid import StagedBlob
from .digest import CHUNK, Digest
from .oci import Descriptor, MediaType, canonical_json
from .tarcheck import TarballChecker

__all__ = [
    "LAYER_FORMAT",
    "ALIGN",
    "ALIGN_MIN_SIZE",
    "LayerSource",
    "Entry",
    "BuiltLayer",
    "RemoteLayerIndex",
    "scan_sources",
    "tar_chunks",
    "build_layer",
    "layer_from_tarball",
    "source_date_epoch",
]

#: 5: forced gzip of a layer whose sample barely compresses is Huffman-only (zlib-ng); the
#: bytes of every other layer are as in 4. 4: the data of files of ALIGN_MIN_SIZE or more
#: starts at a multiple of ALIGN in the tar (a tree of smaller files has the same tar as
#: before). 3: gzip as one libdeflate gzip member per 1 MiB block (was 2: ISA-L raw deflate
#: blocks, sync-flushed, in one member; 1: a fresh zlib compressobj per block); zstd in one
#: single-threaded frame.
LAYER_FORMAT = "ociassemble-layer-5"
#: File data offsets in the tar stream are multiples of this: the block size of ext4, XFS
#: and btrfs as made by default (and the page size), which FICLONERANGE needs the source's
#: and the destination's offsets to be multiples of.
ALIGN = 4096
#: Files this big or bigger are aligned; a smaller one would cost up to 4.5 KiB of padding
#: for a clone that saves less than a write (a deps tree of small files stays as it was).
ALIGN_MIN_SIZE = 1 << 20
#: Names the rules a base tarball was checked by (``tarcheck``) in its layer-index key:
#: a tarball accepted before the checks existed is checked again, not reused unchecked.
TARBALL_CHECK = "tarcheck-1"
#: How many chunks the file-reading thread may run ahead of the hasher/compressor.
PREFETCH_DEPTH = 4
#: auto compression samples this many bytes from each of a layer's biggest files.
SAMPLE_BYTES = 256 << 10
SAMPLE_FILES = 8


def source_date_epoch() -> int:
    """The build's timestamp: ``SOURCE_DATE_EPOCH`` if set (reproducible-builds.org), else 0."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"SOURCE_DATE_EPOCH={raw!r} is not a whole number of seconds") from None
    if value < 0:
        raise UsageError(f"SOURCE_DATE_EPOCH={raw!r} is negative")
    return value


@dataclass(frozen=True)
class LayerSource:
    """A host path copied to an in-image path.

    A directory's contents land under ``dest``; a file lands at ``dest``, or inside it
    when ``dest`` ends with ``/``. ``preserve`` keeps owners, modes and special files
    (for a base rootfs directory only: user content is normalised).
    """

    src: Path
    dest: str = "/"
    preserve: bool = False

    @classmethod
    def parse(cls, spec: str) -> "LayerSource":
        """``SRC[:DEST]`` as given to ``--layer`` (DEST defaults to ``/``)."""
        src, sep, dest = spec.rpartition(":") if ":" in spec else (spec, "", "/")
        if not sep:
            src, dest = spec, "/"
        if not src:
            raise UsageError(f"--layer {spec!r}: expected SRC[:DEST], e.g. ./model:/var/models")
        if not dest.startswith("/"):
            raise UsageError(f"--layer {spec!r}: DEST {dest!r} must be an absolute in-image path, e.g. /opt/app")
        return cls(Path(src), dest)

    def created_by(self) -> str:
        """The image history line of a ``--layer`` source: its in-image destination only.

        Not the host path, nor its folder's name: ``--layer $PWD:/app`` would put the
        checkout's own name into the config, and two checkouts would build two digests.
        """
        return f"ociassemble: layer {self.dest}"


@dataclass(frozen=True)
class Entry:
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


def _norm_dest(dest: str) -> PurePosixPath:
    parts = [p for p in PurePosixPath("/" + dest.lstrip("/")).parts[1:] if p not in ("", ".")]
    if ".." in parts:
        raise UsageError(f"in-image path {dest!r} contains '..': give a plain absolute path")
    return PurePosixPath(*parts) if parts else PurePosixPath()


def _norm_mode(st_mode: int, kind: str) -> int:
    if kind == "dir":
        return 0o755
    if kind == "symlink":
        return 0o777
    return 0o755 if st_mode & 0o111 else 0o644


def _scan_one(source: LayerSource, out: dict[str, Entry], links: dict[tuple[int, int], str],
              ignore: Callable[[Path], bool] | None) -> None:
    src = source.src
    try:
        st = os.lstat(src)
    except FileNotFoundError:
        raise InputError(f"{src}: no such file or directory; check the path") from None
    except PermissionError:
        raise InputError(f"{src}: permission denied; make it readable") from None
    dest = _norm_dest(source.dest)
    root = src
    if stat.S_ISDIR(st.st_mode):
        base = dest
        walk_root = src
    else:
        if source.dest.endswith("/") or str(dest) == ".":
            base = dest
            target = dest / src.name
        else:
            base = dest.parent
            target = dest
        walk_root = None
        root = src.parent
    # Only the destination folder of a folder source is an entry; its parents are not:
    # an entry for /lib would replace a base's merged-usr symlink /lib -> usr/lib.
    # Runtimes create missing parents (0755, root) when they apply a layer.
    if walk_root is not None and str(base) not in ("", "."):
        out.setdefault(str(base), Entry(str(base), "dir", 0o755))

    def add(path: str, name: str, st: os.stat_result) -> None:
        mode = st.st_mode
        stamp = (st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
        if stat.S_ISDIR(mode):
            e = Entry(name, "dir", stat.S_IMODE(mode) if source.preserve else 0o755, stamp=(st.st_mtime_ns,))
        elif stat.S_ISREG(mode):
            if st.st_nlink > 1:
                first = links.get((st.st_dev, st.st_ino))
                if first is not None:
                    e = Entry(name, "hardlink", _norm_mode(mode, "file"), linkname=first, stamp=stamp)
                    out[name] = e
                    return
                links[(st.st_dev, st.st_ino)] = name
            if not os.access(path, os.R_OK):
                raise InputError(f"{path}: permission denied; make it readable or leave it out")
            m = stat.S_IMODE(mode) if source.preserve else _norm_mode(mode, "file")
            e = Entry(name, "file", m, size=st.st_size, source=str(path), stamp=stamp)
        elif stat.S_ISLNK(mode):
            target = os.readlink(path)
            if not target.startswith("/") and not source.preserve:
                resolved = os.path.normpath(os.path.join(os.path.dirname(os.path.relpath(path, root)), target))
                if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
                    raise InputError(
                        f"{path}: symlink to {target!r} points outside {root}; copy the file in, "
                        "or use an absolute in-image target"
                    )
            e = Entry(name, "symlink", 0o777, linkname=target, stamp=stamp)
        elif source.preserve and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)):
            kind = "chr" if stat.S_ISCHR(mode) else "blk" if stat.S_ISBLK(mode) else "fifo"
            e = Entry(name, kind, stat.S_IMODE(mode), devmajor=os.major(st.st_rdev) if kind != "fifo" else 0,
                      devminor=os.minor(st.st_rdev) if kind != "fifo" else 0, stamp=stamp)
        else:
            what = ("a socket" if stat.S_ISSOCK(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a device file" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")
            raise InputError(f"{path} is {what}, which cannot go into an image layer; remove it or ignore it")
        if source.preserve:
            e = Entry(e.name, e.kind, e.mode, e.size, e.source, e.linkname, st.st_uid, st.st_gid,
                      e.devmajor, e.devminor, e.stamp)
        prev = out.get(name)
        if prev is not None and not (prev.kind == "dir" and e.kind == "dir"):
            raise InputError(f"two sources put something at /{name} in one layer; give each a different destination")
        out[name] = e

    if walk_root is None:
        add(str(src), str(target), st)
        return
    # Plain strings, not Path objects, from here on: an unchanged tree is only scanned
    # (its fingerprint is the layer index's key), and Path construction was most of that
    # scan's time for a deps tree of ~6000 files (measured).
    top = str(walk_root)
    base_name = "" if str(base) == "." else str(base)

    def name_of(rel: str) -> str:
        return f"{base_name}/{rel}" if base_name else rel

    for dirpath, dirnames, filenames in os.walk(top, onerror=_walk_error):
        rel = os.path.relpath(dirpath, top)
        prefix = "" if rel == "." else rel + "/"
        dirnames.sort()
        if ignore is not None:
            dirnames[:] = [d for d in dirnames if not ignore(Path(dirpath, d))]
        if rel != ".":
            add(dirpath, name_of(rel), os.lstat(dirpath))
        for fname in sorted(filenames):
            p = os.path.join(dirpath, fname)
            if ignore is not None and ignore(Path(p)):
                continue
            add(p, name_of(prefix + fname), os.lstat(p))
        # os.walk lists symlinks to directories in dirnames and does not follow them
        for d in list(dirnames):
            p = os.path.join(dirpath, d)
            if os.path.islink(p):
                dirnames.remove(d)
                add(p, name_of(prefix + d), os.lstat(p))


def _walk_error(exc: OSError) -> None:
    raise InputError(f"{exc.filename}: {exc.strerror}; check the path and its permissions")


def scan_sources(sources: Sequence[LayerSource], ignore: Callable[[Path], bool] | None = None) -> list[Entry]:
    """All entries of a layer built from ``sources``, sorted, validated, not yet read."""
    out: dict[str, Entry] = {}
    links: dict[tuple[int, int], str] = {}
    for source in sources:
        _scan_one(source, out, links, ignore)
    out.pop("", None)
    out.pop(".", None)
    _first_link_carries_content(out)
    return [out[k] for k in sorted(out, key=_tar_order)]


def _tar_order(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _first_link_carries_content(out: dict[str, Entry]) -> None:
    """Make the first of each group of hard links, in tar order, the one with the content.

    The scan meets the files of a group in walk order, which is not the tar's sorted
    order (``zz`` at the top is walked before ``a/b``): a link written before its target
    is refused by every unpacker (found by the base-tarball property test).
    """
    groups: dict[str, list[str]] = {}
    for name, e in out.items():
        if e.kind == "hardlink":
            groups.setdefault(e.linkname, []).append(name)
    for target, links in groups.items():
        first = min([target, *links], key=_tar_order)
        if first == target or target not in out:
            continue
        content = out[target]
        out[first] = Entry(first, "file", content.mode, content.size, content.source, "", content.uid,
                           content.gid, stamp=content.stamp)
        for name in (target, *links):
            if name != first:
                old = out[name]
                out[name] = Entry(name, "hardlink", old.mode, linkname=first, uid=old.uid, gid=old.gid,
                                  stamp=old.stamp)


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


def _entry_headers(entries: Iterable[Entry], epoch: int) -> Iterator[tuple[Entry, bytes]]:
    """Each entry with its header, placed where the tar stream will have it (``_header``)."""
    offset = 0
    for e in entries:
        header = _header(e, epoch, offset)
        yield e, header
        offset += len(header)
        if e.kind == "file":
            offset += e.size + (-e.size % tarfile.BLOCKSIZE)


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

    def put(data: bytes) -> Iterator[bytes]:
        nonlocal buf, view, pos
        i = 0
        while i < len(data):
            n = min(len(data) - i, CHUNK - pos)
            view[pos:pos + n] = data[i:i + n]
            pos += n
            i += n
            if pos == CHUNK:
                yield buf
                buf = bytearray(CHUNK)
                view = memoryview(buf)
                pos = 0

    for e, header in _entry_headers(entries, epoch):
        yield from put(header)
        if e.kind != "file":
            continue
        assert e.source is not None
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
            remaining = e.size
            while remaining:
                n = f.readinto(view[pos:pos + min(CHUNK - pos, remaining)])
                if not n:
                    raise _changed(e.source)
                if own is not None:
                    own.update(view[pos:pos + n])
                remaining -= n
                pos += n
                if pos == CHUNK:
                    yield buf
                    buf = bytearray(CHUNK)
                    view = memoryview(buf)
                    pos = 0
            if f.read(1) or os.fstat(f.fileno()).st_mtime_ns != st.st_mtime_ns:
                raise _changed(e.source)
            if files is not None and own is not None:
                files[e.name] = FilePart(os.path.abspath(e.source), e.size, stamp_of(st), own.hexdigest())
        yield from put(b"\0" * (-e.size % tarfile.BLOCKSIZE))
    yield from put(b"\0" * (2 * tarfile.BLOCKSIZE))
    if pos:
        yield bytes(view[:pos])


_DONE = object()


def prefetch(chunks: Iterator[bytes], depth: int = PREFETCH_DEPTH) -> Iterator[bytes]:
    """Run ``chunks`` on a reader thread, ``depth`` ahead: disk reads overlap hashing.

    Errors on the reader thread are re-raised in the consumer; a consumer that stops
    early (an exception downstream) makes the reader stop too.
    """
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for c in chunks:
                while not stop.is_set():
                    try:
                        q.put(c, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)

    t = threading.Thread(target=run, name="layer-reader", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        t.join(timeout=5)


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
    epoch: int | None = None,
    ignore: Callable[[Path], bool] | None = None,
    entries: Sequence[Entry] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    remote: "RemoteLayerIndex | None" = None,
    by_reference: bool = True,
) -> BuiltLayer:
    """The layer for ``sources``: from the layer index if nothing changed, else written once.

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

    Raises InputError for missing, unreadable, special or escaping inputs.
    """
    epoch = source_date_epoch() if epoch is None else epoch
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

    def pieces() -> Iterator[bytes | FilePart]:
        for e, header in _entry_headers(entries, epoch):
            yield header
            if e.kind == "file":
                yield files[e.name]
                yield b"\0" * (-e.size % tarfile.BLOCKSIZE)
        yield b"\0" * (2 * tarfile.BLOCKSIZE)

    record = RefRecord.build(diff_id, pieces())
    if record.size != raw_size:  # the headers are a pure function of the entries: cannot happen
        raise ArchiveError(f"layer {diff_id}: its recorded parts add up to {record.size} bytes, not {raw_size}")
    cache.put_ref(record)
    return BuiltLayer(Descriptor(compression.media_type, diff_id, raw_size), diff_id, False, compression.id, raw_size,
                      held=True)


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
