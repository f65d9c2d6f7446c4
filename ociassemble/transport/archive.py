"""Image tarballs: ``oci-archive:FILE[:TAG]`` (a tarred OCI layout) and
``docker-archive:FILE[:NAME:TAG]`` (``docker save``'s format, with ``manifest.json``).

Both are written to a temp file beside the target and renamed when complete. Their
tar entries follow the layer rules (sorted, epoch mtimes, root-owned), so an
archive's bytes are as reproducible as the image in it. docker-archive layers are
stored uncompressed, as ``docker save`` and skopeo write them, so their files hash
to the config's diff_ids.

Read back, an OCI archive's layers, and those of a docker-archive a build would keep
uncompressed (a model's weights), are held in the cache by reference to their bytes in
the archive (a tar keeps a member's data in one run): a model is not copied again.
"""

from __future__ import annotations

import re
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO

from ..errors import ArchiveError, DigestMismatchError, InputError
from ..image.assemble import Image
from ..image.cache import BlobCache
from ..image.diffid import HeldIn, StagedBlob, all_or_nothing, stage_layer
from ..image.digest import CHUNK, Digest, HashingWriter
from ..image.imageindex import Target
from ..image.oci import (CONFIG_MAX, MANIFEST_MAX, Descriptor, Index, Manifest, MediaType, Platform,
                         canonical_json, parse_json)
from ..image.resolve import check_size, load_index, load_json, resolve_image
from ..image.tarcheck import UnsafeEntry, entry_parts
from ..image.tarread import LimitedTarInfo, scan_headers
from .layout import _LAYOUT, documents, replace_path, select_manifest, temp_sibling, top_descriptor

__all__ = ["write_oci_archive", "read_oci_archive", "write_docker_archive", "read_docker_archive"]


class _TarWriter:
    """Writes a deterministic tar: root-owned, fixed mtime, entries added in order."""

    def __init__(self, f: BinaryIO, epoch: int = 0) -> None:
        self._f = f
        self._epoch = epoch

    def _info(self, name: str, kind: bytes, size: int = 0, mode: int = 0o644) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.size = size
        info.mode = mode
        info.mtime = self._epoch
        info.uname = info.gname = ""
        return info

    def add_dir(self, name: str) -> None:
        self._f.write(self._info(name.rstrip("/") + "/", tarfile.DIRTYPE, mode=0o755).tobuf(tarfile.PAX_FORMAT))

    def add_bytes(self, name: str, data: bytes) -> None:
        self._f.write(self._info(name, tarfile.REGTYPE, len(data)).tobuf(tarfile.PAX_FORMAT))
        self._f.write(data)
        self._pad(len(data))

    def add_stream(self, name: str, stream: BinaryIO, size: int) -> None:
        self._f.write(self._info(name, tarfile.REGTYPE, size).tobuf(tarfile.PAX_FORMAT))
        left = size
        while left:
            data = stream.read(min(CHUNK, left))
            if not data:
                raise ArchiveError(f"{name}: source ended {left} bytes early")
            self._f.write(data)
            left -= len(data)
        self._pad(size)

    def add_unknown_size(self, name: str, stream: BinaryIO) -> int:
        """Stream data whose size is only known at the end (a decompressed layer):
        write a placeholder header, the data, then seek back and rewrite the header."""
        start = self._f.tell()
        header = self._info(name, tarfile.REGTYPE, 0).tobuf(tarfile.PAX_FORMAT)
        self._f.write(header)
        size = 0
        while True:
            data = stream.read(CHUNK)
            if not data:
                break
            self._f.write(data)
            size += len(data)
        end = self._f.tell()
        final = self._info(name, tarfile.REGTYPE, size).tobuf(tarfile.PAX_FORMAT)
        if len(final) != len(header):
            raise ArchiveError(f"{name}: layer too large for a tar header ({size} bytes)")
        self._f.seek(start)
        self._f.write(final)
        self._f.seek(end)
        self._pad(size)
        return size

    def _pad(self, size: int) -> None:
        pad = -size % tarfile.BLOCKSIZE
        if pad:
            self._f.write(b"\0" * pad)

    def close(self) -> None:
        self._f.write(b"\0" * (2 * tarfile.BLOCKSIZE))


def _atomic_tar(target: Path, fill) -> None:  # type: ignore[no-untyped-def]
    tmp = temp_sibling(target, directory=False)
    try:
        with open(tmp, "wb") as f:
            w = _TarWriter(f)
            fill(w)
            w.close()
        replace_path(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_oci_archive(target: Target, cache: BlobCache, path: Path, tag: str | None = None) -> None:
    """A tarred OCI layout, as ``skopeo copy … oci-archive:`` reads it (a multi-platform
    image's index nested in ``index.json``, as ``write_layout`` writes it)."""
    target.ensure_blobs(cache)
    docs = documents(target)

    def fill(w: _TarWriter) -> None:
        blobs: dict[str, int] = {d.digest: d.size for d in target.blobs()}
        w.add_dir("blobs")
        w.add_dir("blobs/sha256")
        for digest in sorted({*blobs, *docs}):
            name = f"blobs/sha256/{Digest(digest).hex}"
            if digest in docs:
                w.add_bytes(name, docs[digest])
            else:
                with cache.open(digest) as f:
                    w.add_stream(name, f, cache.size(digest))
        w.add_bytes("index.json", Index((top_descriptor(target, tag),)).to_bytes())
        w.add_bytes("oci-layout", _LAYOUT)

    _atomic_tar(path, fill)


def _open_tar(path: Path, what: str) -> tarfile.TarFile:
    """The archive for reading, once its headers are walked (``tarread.scan_headers``): tarfile
    would read a huge PAX header whole, and keep every header of millions, even to open it."""
    try:
        with open(path, "rb") as f:
            scan_headers(f, ARCHIVE_MAX_MEMBERS)
        return tarfile.open(path, "r:")
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what}; check the path") from None
    except UnsafeEntry as exc:
        raise ArchiveError(f"{what} {path} holds {exc}: no image archive does; {_FIX}") from None
    except (tarfile.TarError, OSError) as exc:
        raise ArchiveError(f"{path} is not a readable {what} ({exc})") from None


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
#: A docker-archive layer with more entries than this is gzipped without sampling it.
SAMPLE_MAX_ENTRIES = 100_000
#: An image archive holds a blob per member (a docker-archive a few more): more than this is refused.
ARCHIVE_MAX_MEMBERS = 100_000
_FIX = "re-create the archive (skopeo copy, ociassemble build -o)"


def _members(tf: tarfile.TarFile, where: str) -> dict[str, tarfile.TarInfo]:
    """Every member by its normalised name (``./a`` is ``a``); unsafe names are refused.

    An archive is only read, never extracted, but a member named ``../x`` or ``/x`` has
    no place in an image archive and says the file was made to attack an extractor.
    """
    try:
        members = tf.getmembers()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"{where} is truncated or corrupt ({exc}); {_FIX}") from None
    out: dict[str, tarfile.TarInfo] = {}
    for m in members:
        try:
            parts = entry_parts(m.name)
        except UnsafeEntry as exc:
            raise ArchiveError(f"{where}: member {m.name!r}: {exc}; {_FIX}") from None
        out["/".join(parts)] = m
    return out


def _member(names: dict[str, tarfile.TarInfo], name: object, where: str, what: str) -> tarfile.TarInfo | None:
    """The regular member ``name`` names (None if absent), refusing links and unsafe names.

    tarfile would resolve a symlink or hard link member to another member, or fail with
    a KeyError when it names a file outside the archive: an image archive's blobs and
    layers are regular files, so a link is refused rather than followed.
    """
    if not isinstance(name, str) or not name:
        raise ArchiveError(f"{where}: the {what} is named {name!r}, not a file name; {_FIX}")
    try:
        parts = entry_parts(name)
    except UnsafeEntry as exc:
        raise ArchiveError(f"{where}: the {what} {name!r} is not a path inside the archive ({exc}); {_FIX}") from None
    m = names.get("/".join(parts))
    if m is None:
        return None
    if not m.isreg():
        kind = "a symlink" if m.issym() else "a hard link" if m.islnk() else "a directory" if m.isdir() else "a special file"
        raise ArchiveError(f"{where}: the {what} {name!r} is {kind}, not a regular member: ociassemble reads "
                           f"no links in an image archive; {_FIX}")
    return m


def _read_member(tf: tarfile.TarFile, m: tarfile.TarInfo, where: str, limit: int | None = None) -> bytes:
    f = tf.extractfile(m)
    assert f is not None  # a regular member (see _member)
    try:
        return f.read() if limit is None else f.read(limit)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"{where}: member {m.name!r} is truncated or corrupt ({exc}); {_FIX}") from None


def _member_bytes(tf: tarfile.TarFile, names: dict[str, tarfile.TarInfo], name: object, where: str,
                  limit: int, what: str = "") -> bytes:
    """A JSON member's bytes; one bigger than ``limit`` is refused unread (``resolve.check_size``)."""
    m = _member(names, name, where, what or str(name))
    if m is None:
        raise ArchiveError(f"{where} has no {name}")
    check_size(m.size, limit, f"{what or name} {m.name!r}" if what else str(name), where)
    return _read_member(tf, m, where, limit + 1)


def read_oci_archive(path: Path, tag: str | None, cache: BlobCache, *, verify_diff_ids: bool = True,
                     platform: Platform | str | None = None, defer: bool = False) -> Target:
    """Read an oci-archive, its blobs verified (digest; diff_id with ``verify_diff_ids``) and
    its layers held in the cache by reference to their bytes in the archive (``diffid.HeldIn``:
    a tar keeps a member's data in one run), as ``read_layout`` holds a layout's: a model's
    layer is not copied again. An index is resolved to ``platform``, and ``defer`` leaves an
    uncompressed layer unread for the registry to check (``read_layout``).

    Members must be regular files with relative names (no links, no ``..``); a sparse one
    (its data not in one run) is copied.
    """
    where = f"oci-archive {path}"
    with _open_tar(path, "oci-archive") as tf:
        names = _members(tf, where)
        if "index.json" not in names:
            raise ArchiveError(f"{where} has no index.json: not an OCI archive (a docker-archive? use docker-archive:{path})")

        def member(d: Descriptor) -> tarfile.TarInfo:
            algo, _, hexd = d.digest.partition(":")
            m = _member(names, f"blobs/{algo}/{hexd}", where, f"blob {d.digest}")
            if m is None:
                raise ArchiveError(f"{where} is missing blob {d.digest}")
            return m

        def read_blob(d: Descriptor) -> bytes:
            return _read_member(tf, member(d), where, d.size + 1)  # checked against its digest by resolve_image

        def ingest(d: Descriptor, diff_id: str) -> StagedBlob:
            m = member(d)
            f = tf.extractfile(m)
            assert f is not None and tf.fileobj is not None  # "r:": the archive's own file, no codec
            held = None if m.issparse() else HeldIn(path, tf.fileobj.fileno(), m.offset_data, m.size)
            return stage_layer(cache, f, d, diff_id if verify_diff_ids else None, where, held=held,
                               defer=defer)

        index = load_index(_member_bytes(tf, names, "index.json", where, MANIFEST_MAX), where)
        return resolve_image(read_blob, select_manifest(index, tag, where), where, ingest, platform)


def _uncompressed(cache: BlobCache, d: Descriptor) -> BinaryIO:
    f = cache.open(d.digest)
    if d.media_type in (MediaType.LAYER_GZIP,):
        from isal import igzip_threaded

        return igzip_threaded.open(f, "rb")  # type: ignore[return-value]
    if d.media_type == MediaType.LAYER_ZSTD:
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(f, closefd=True)  # type: ignore[return-value]
    return f


def write_docker_archive(image: Image, cache: BlobCache, path: Path, repo_tag: str | None = None) -> None:
    """``docker save``'s format: ``manifest.json``, the config, and uncompressed layers
    named ``<diff_id hex>.tar`` (``podman load``, ``docker load`` and skopeo read it)."""
    image.ensure_blobs(cache)

    def fill(w: _TarWriter) -> None:
        config_name = f"{Digest(image.manifest.config.digest).hex}.json"
        layer_names = []
        done: set[str] = set()
        for d, diff_id in zip(image.manifest.layers, image.config.diff_ids):
            name = f"{Digest(diff_id).hex}.tar"
            layer_names.append(name)
            if name in done:
                continue
            done.add(name)
            with _uncompressed(cache, d) as src:
                hashing = _HashingReader(src)
                w.add_unknown_size(name, hashing)
                if hashing.digest != diff_id:
                    raise DigestMismatchError(diff_id, hashing.digest, f"layer {d.digest} (uncompressed)")
        w.add_bytes(config_name, image.config_bytes)
        manifest = [{"Config": config_name, "RepoTags": [repo_tag] if repo_tag else [], "Layers": layer_names}]
        w.add_bytes("manifest.json", canonical_json(manifest))

    _atomic_tar(path, fill)


class _HashingReader:
    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._h = HashingWriter(None)

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._h.write(data)
        return data

    @property
    def digest(self) -> str:
        return str(self._h.digest)


def read_docker_archive(path: Path, name: str | None, cache: BlobCache, *, defer: bool = False) -> Image:
    """Read a ``docker save`` / skopeo docker-archive: its uncompressed layers stored as a
    build would store those trees (``_docker_layer``), so a default build's image written as a
    docker-archive reads back to its very digest. ``defer`` (``push --from``): a layer kept
    uncompressed is not read now but checked by the registry as it is sent (one read).
    """
    where = f"docker-archive {path}"
    with _open_tar(path, "docker-archive") as tf:
        names = _members(tf, where)
        try:
            entries = parse_json(_member_bytes(tf, names, "manifest.json", where, MANIFEST_MAX))
        except ValueError as exc:
            raise ArchiveError(f"{where}/manifest.json is not JSON ({exc})") from None
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            raise ArchiveError(f"{where}/manifest.json lists no image")
        entry = entries[0]
        if name:
            hits = [e for e in entries if name in (e.get("RepoTags") or [])]
            if not hits:
                raise InputError(f"{where} has no image named {name!r}")
            entry = hits[0]
        layer_names = entry.get("Layers", [])
        if not isinstance(layer_names, list):
            raise ArchiveError(f"{where}/manifest.json: Layers is not a list; {_FIX}")
        config_bytes = _member_bytes(tf, names, entry.get("Config"), where, CONFIG_MAX, "config")
        config = load_json(config_bytes, f"{where}/{entry['Config']}")
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        if len(diff_ids) != len(layer_names):
            raise ArchiveError(f"{where}: {len(layer_names)} layers but {len(diff_ids)} diff_ids in its config")
        members = []
        for layer_name in layer_names:  # every name checked before any layer is read
            m = _member(names, layer_name, where, "layer")
            if m is None:
                raise ArchiveError(f"{where} is missing layer {layer_name}")
            members.append(m)
        with all_or_nothing() as staged:  # every layer verified before any is kept
            layers = tuple(_docker_layer(tf, path, m, str(diff_id), f"{where}: layer {layer_name}", cache, staged, defer)
                           for layer_name, m, diff_id in zip(layer_names, members, diff_ids))
        manifest = Manifest(Descriptor(MediaType.CONFIG, str(cache.put_bytes(config_bytes)), len(config_bytes)), layers)
        return Image.from_parts(manifest, config_bytes)


def _docker_layer(tf: tarfile.TarFile, path: Path, m: tarfile.TarInfo, diff_id: str, where: str, cache: BlobCache,
                  staged: list[StagedBlob], defer: bool) -> Descriptor:
    """One layer of a docker-archive, compressed as a build's ``auto`` would compress its tree
    (the same samples: the middle of its biggest files): gzipped into the cache, or, when it
    barely compresses (a model's weights), kept uncompressed and held by reference to its
    bytes in the archive, as an oci-archive's layers are: its digest is then its diff_id, and
    a model's gigabytes are neither copied nor compressed."""
    from ..image.compress import Compression, choose_compression
    from ..image.layer import DiffIdMismatch, _write_layer  # the same one-pass hash+compress writer as built layers

    f = tf.extractfile(m)
    assert f is not None and tf.fileobj is not None  # "r:": the archive's own file, no codec
    if f.read(2) == b"\x1f\x8b":
        raise ArchiveError(f"{where} is gzip-compressed; ociassemble reads uncompressed docker-archive layers "
                           "(as docker save writes them)")
    f.seek(0)
    samples, total = _tree_samples(f)
    f.seek(0)
    if choose_compression(samples, total, Compression.parse("auto")).codec == "none":
        if not _DIGEST.fullmatch(diff_id):
            raise ArchiveError(f"{where}: its config's diff_id {diff_id!r} is not a sha256 digest; {_FIX}")
        desc = Descriptor(MediaType.LAYER_TAR, diff_id, m.size)
        held = None if m.issparse() else HeldIn(path, tf.fileobj.fileno(), m.offset_data, m.size)
        try:
            staged.append(stage_layer(cache, f, desc, diff_id, where, held=held, defer=defer))
        except DigestMismatchError as exc:
            raise _lying(where, exc.actual, diff_id) from None
        return desc
    try:
        built = _write_layer(cache, iter(lambda: f.read(CHUNK), b""), Compression.parse("gzip"),
                             expect_diff_id=diff_id, staged=staged)
    except DiffIdMismatch as exc:
        raise _lying(where, exc.actual, diff_id) from None
    return built.descriptor


def _lying(where: str, actual: str, diff_id: str) -> ArchiveError:
    return ArchiveError(f"{where} unpacks to diff_id {actual}, but the image config says {diff_id}: "
                        f"the config does not describe its layers; {_FIX}")


def _tree_samples(f: BinaryIO) -> tuple[list[bytes], int]:
    """What a build samples to choose a layer's compression (``layer._samples``), read from the
    layer's tar: the middle of its biggest files, and the files' total size. Only the headers
    are read to find them (the member is seekable), and only the biggest few are kept, so a
    hostile layer of millions of tiny entries costs no memory; past ``SAMPLE_MAX_ENTRIES``
    entries, or a tar that does not parse, gives nothing (so it is gzipped, and any damage is
    found as it is read)."""
    from ..image.layer import SAMPLE_BYTES, SAMPLE_FILES

    big: list[tuple[int, int, tarfile.TarInfo]] = []  # (-size, order, entry): the biggest first
    total = 0
    try:
        # (a PAX header over the limit is refused unread: OversizedEntry, a TarError)
        with tarfile.open(fileobj=f, mode="r:", tarinfo=LimitedTarInfo) as inner:
            for n in range(SAMPLE_MAX_ENTRIES + 1):
                e = inner.next()
                inner.members.clear()  # (tarfile keeps every header it read)
                if e is None:
                    break
                if n == SAMPLE_MAX_ENTRIES:
                    return [], 0
                if e.isreg() and e.size:
                    total += e.size
                    big = sorted([*big, (-e.size, n, e)])[:SAMPLE_FILES]
            samples = []
            for neg, _, e in big:
                data = inner.extractfile(e)
                assert data is not None
                data.seek(-neg // 2)
                samples.append(data.read(SAMPLE_BYTES))
            return samples, total
    except (tarfile.TarError, ValueError, OSError, EOFError):
        return [], 0
