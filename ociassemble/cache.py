"""The content-addressed blob store every build writes into and every output reads from.

Layout under the cache root (``--cache-dir``, ``$OCIASSEMBLE_CACHE``, else
``$XDG_CACHE_HOME/ociassemble`` or ``~/.cache/ociassemble``)::

    blobs/sha256/<hex>    one file per blob, named by its digest
    layers/<key>.json     layer index: a tree's fingerprint -> the layer built from it
    tmp/                  blobs being written; renamed into blobs/ only once verified

A blob appears under its digest only complete and verified (temp file + rename on
the same filesystem), so a build killed at any point leaves the store consistent.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from .digest import CHUNK, Digest, HashingWriter, VerifyingReader
from .errors import ArchiveError, DigestMismatchError, InputError, OciAssembleError

__all__ = ["BlobCache", "BlobWriter", "default_cache_dir", "DiskFullError"]


class DiskFullError(OciAssembleError):
    """No space left where ociassemble writes."""


def default_cache_dir() -> Path:
    env = os.environ.get("OCIASSEMBLE_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "ociassemble" if xdg else Path.home() / ".cache" / "ociassemble"


def _raise_os_error(exc: OSError, where: Path) -> None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise DiskFullError(f"no space left on the device holding {where}: free some space or move the cache with --cache-dir") from exc
    raise InputError(f"cannot write {where}: {exc.strerror}") from exc


class BlobWriter:
    """A blob being written: hashes as it goes, lands under its digest on ``commit``.

    ``hashed=False`` is for a caller that hashes the very same bytes itself (an
    uncompressed layer: digest = diff_id): nothing is hashed here, and ``commit`` must
    be given that digest, which it trusts.
    """

    def __init__(self, cache: "BlobCache", hashed: bool = True) -> None:
        self._cache = cache
        fd, name = tempfile.mkstemp(dir=cache.tmp_dir, prefix="blob-")
        self._tmp = Path(name)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._hashed = hashed
        self._hasher = HashingWriter(self._file, hashed)
        self.committed: Digest | None = None

    def write(self, data: bytes | memoryview) -> int:
        try:
            return self._hasher.write(data)
        except OSError as exc:
            _raise_os_error(exc, self._cache.root)
            raise

    @property
    def size(self) -> int:
        return self._hasher.size

    @property
    def digest(self) -> Digest:
        return self._hasher.digest

    def commit(self, expected: Digest | None = None) -> Digest:
        """Close and move into place; with ``expected``, refuse content that does not match it.

        An unhashed writer (``hashed=False``) needs ``expected`` and takes it as the digest.
        """
        self._file.close()
        if not self._hashed:
            if expected is None:
                self.abort()
                raise ValueError("an unhashed blob writer must be committed with its digest")
            digest = expected
        else:
            digest = self._hasher.digest
        if expected is not None and digest != expected:
            self.abort()
            raise DigestMismatchError(str(expected), str(digest))
        final = self._cache.path(digest)
        if final.exists():
            self._tmp.unlink(missing_ok=True)
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp, final)
        self.committed = digest
        return digest

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if self.committed is None:
            self.abort()


@dataclass(frozen=True)
class BlobCache:
    """Blobs by digest, plus the layer index. Cheap to construct; holds no open files."""

    root: Path

    def __post_init__(self) -> None:
        try:
            for sub in ("blobs/sha256", "layers", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the cache at {self.root}: {exc.strerror}; pass --cache-dir or set OCIASSEMBLE_CACHE to a writable place") from exc

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def path(self, digest: Digest | str) -> Path:
        d = digest if isinstance(digest, Digest) else Digest(digest)
        return self.root / "blobs" / "sha256" / d.hex

    def has(self, digest: Digest | str) -> bool:
        return self.path(digest).is_file()

    def open(self, digest: Digest | str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise ArchiveError(f"blob {digest} is not in the cache at {self.root}: rebuild, or pull the image again") from None

    def size(self, digest: Digest | str) -> int:
        return self.path(digest).stat().st_size

    def writer(self, hashed: bool = True) -> BlobWriter:
        """A new blob; see ``BlobWriter`` for ``hashed=False``."""
        try:
            return BlobWriter(self, hashed)
        except OSError as exc:
            _raise_os_error(exc, self.root)
            raise

    def put_bytes(self, data: bytes) -> Digest:
        digest = Digest.of_bytes(data)
        if not self.has(digest):
            with self.writer() as w:
                w.write(data)
                w.commit(digest)
        return digest

    def ingest(self, stream: BinaryIO, expected: Digest, size: int | None, where: str = "") -> Digest:
        """Copy a blob from ``stream`` into the store, verifying digest and size as it streams."""
        if self.has(expected):
            return expected
        reader = VerifyingReader(stream, expected, size, where)
        with self.writer() as w:
            while True:
                data = reader.read(CHUNK)
                if not data:
                    break
                w.write(data)
            reader.verify()
            w.commit(expected)
        return expected

    def read_json(self, digest: Digest | str) -> Any:
        with self.open(digest) as f:
            data = f.read()
        if Digest.of_bytes(data) != (digest if isinstance(digest, Digest) else Digest(digest)):
            raise DigestMismatchError(str(digest), str(Digest.of_bytes(data)), f"cache {self.root}")
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ArchiveError(f"blob {digest} is not JSON: {exc}") from None

    # -- layer index -------------------------------------------------------
    def get_layer(self, key: str) -> dict[str, Any] | None:
        try:
            record = json.loads((self.root / "layers" / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        if not self.has(record.get("digest", "sha256:" + "0" * 64)):
            return None
        return record

    def put_layer(self, key: str, record: dict[str, Any]) -> None:
        final = self.root / "layers" / f"{key}.json"
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="layer-")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, sort_keys=True)
        os.replace(name, final)

    def iter_blobs(self) -> Iterator[Path]:
        yield from sorted((self.root / "blobs" / "sha256").iterdir())
