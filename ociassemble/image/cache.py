"""The content-addressed blob store every build writes into and every output reads from.

Layout under the cache root (``--cache-dir``, ``$OCIASSEMBLE_CACHE``, else
``$XDG_CACHE_HOME/ociassemble`` or ``~/.cache/ociassemble``)::

    blobs/sha256/<hex>    one file per blob, named by its digest
    refs/sha256/<hex>     a blob held by reference: an uncompressed layer's tar headers plus
                          the paths, fingerprints and digests of the user's files (``blobref``)
    layers/<key>.json     layer index: a tree's fingerprint -> the layer built from it
    diff_ids/<hex>        a layer blob's verified diff_id (its uncompressed tar's digest)
    tmp/                  blobs being written; renamed into blobs/ only once verified

A blob appears under its digest only complete and verified (temp file + rename on
the same filesystem), so a build killed at any point leaves the store consistent.
A temp file is held under an exclusive ``flock`` by the process writing it
(``tmplock``), so ``BlobCache.verify`` can tell one left by a killed process (lock
free) from one being written (locked) without guessing from its age; ``ociassemble
cache verify`` re-hashes every blob and removes what is not sound (``upkeep``).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from ..errors import ArchiveError, DigestMismatchError, DiskFullError, InputError, OciAssembleError
from .blobref import RefReader, RefRecord
from .digest import CHUNK, Digest, HashingWriter, VerifyingReader
from .tmplock import locked_temp
from .upkeep import TMP_MAX_AGE, CacheReport, PruneReport, prune_cache, verify_cache

#: The store's public face; the upkeep reports are re-exported with the methods that make them.
__all__ = ["BlobCache", "BlobWriter", "CacheReport", "PruneReport", "default_cache_dir",
           "disk_full", "TMP_MAX_AGE"]


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$OCIASSEMBLE_CACHE``, else ``$XDG_CACHE_HOME/ociassemble``, else ``~/.cache/ociassemble``
    (of ``environ``, default ``os.environ``)."""
    environ = os.environ if environ is None else environ
    env = environ.get("OCIASSEMBLE_CACHE")
    if env:
        return Path(env)
    xdg = environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "ociassemble" if xdg else Path.home() / ".cache" / "ociassemble"


def disk_full(exc: OSError, where: Path | str, fix: str = "move the cache with --cache-dir") -> DiskFullError | None:
    """The one-line error for a full disk or quota at ``where``, or None if ``exc`` is another failure."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"no space left on the device holding {where}: free some space or {fix}")
    return None


def _raise_os_error(exc: OSError, where: Path) -> None:
    full = disk_full(exc, where)
    if full is not None:
        raise full from exc
    raise InputError(f"cannot write {where}: {exc.strerror}") from exc


class BlobWriter:
    """A blob being written: hashes as it goes, lands under its digest on ``commit``.

    ``hashed=False`` is for a caller that hashes the very same bytes itself (an
    uncompressed layer: digest = diff_id): nothing is hashed here, and ``commit`` must
    be given that digest, which it trusts.
    """

    def __init__(self, cache: "BlobCache", hashed: bool = True) -> None:
        self._cache = cache
        fd, self._tmp = locked_temp(cache.tmp_dir, "blob-")
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
        The temp file stays open (its lock held) until it is renamed into place.
        """
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
        try:
            if final.exists():
                self._tmp.unlink(missing_ok=True)
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self._tmp, final)
        finally:
            self._file.close()
        self.committed = digest
        return digest

    def abort(self) -> None:
        self._tmp.unlink(missing_ok=True)  # before the lock is dropped with the file
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if self.committed is None:
            self.abort()


@dataclass(frozen=True)
class BlobCache:
    """Blobs by digest, plus the layer index. Cheap to construct; holds no open files."""

    root: Path
    #: blobs held for this run only, by reference to an image's file whose bytes were not read
    #: to check them (``diffid.stage_layer(defer=True)``): read with ``receiver_verifies``, the
    #: receiver (a registry) checks them; read otherwise, hashed as they are read
    _unchecked: dict[str, RefRecord] = field(default_factory=dict, init=False, repr=False, compare=False)
    #: diff_id checks of compressed blobs held unchecked, left for the push (``deferred_checks``),
    #: by (blob digest, the diff_id an image's config claims for it): two images may claim two
    _checks: dict[tuple[str, str], Callable[[], None]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            for sub in ("blobs/sha256", "refs/sha256", "layers", "tmp", "diff_ids"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the cache at {self.root}: {exc.strerror}; pass --cache-dir or set OCIASSEMBLE_CACHE to a writable place") from exc

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def path(self, digest: Digest | str) -> Path:
        d = digest if isinstance(digest, Digest) else Digest(digest)
        return self.root / "blobs" / "sha256" / d.hex

    def ref_path(self, digest: Digest | str) -> Path:
        d = digest if isinstance(digest, Digest) else Digest(digest)
        return self.root / "refs" / "sha256" / d.hex

    def has(self, digest: Digest | str) -> bool:
        """The blob is here, as a file or held by reference."""
        return self.path(digest).is_file() or self.ref_path(digest).is_file() or str(digest) in self._unchecked

    def stored(self, digest: Digest | str) -> bool:
        """The blob is a file of the cache (``path`` can be linked or read), not a reference."""
        return self.path(digest).is_file()

    def has_current(self, digest: Digest | str) -> bool:
        """Held as a file, or by reference to files that still have the fingerprints they were
        hashed with (stat only): a copy at hand (a layout's, an archive's) need not be taken."""
        if self.stored(digest):
            return True
        ref = self.ref(digest)
        return ref is not None and ref.fresh()

    def ref(self, digest: Digest | str) -> RefRecord | None:
        """The by-reference record of ``digest``, or None (absent, or not a sound record)."""
        try:
            record = RefRecord.from_bytes(self.ref_path(digest).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, IndexError, OciAssembleError):
            return None
        return record if record.digest == str(digest) else None

    def open(self, digest: Digest | str, *, receiver_verifies: bool = False) -> BinaryIO:
        """The blob's bytes, whatever its kind: every reader of a blob comes through here.

        A by-reference blob streams from the user's files, checked as it goes
        (``blobref.RefReader``: a file changed since the build is an error naming it).
        ``receiver_verifies``: whoever gets the bytes checks the digest itself (a registry's
        final PUT), so a by-reference blob is checked by its files' fingerprints alone and
        not hashed a second time (see ``blobref``).
        """
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            record = self.record_of(digest)
            if record is not None:
                return RefReader(record, hashed=not receiver_verifies)  # type: ignore[return-value]
            raise ArchiveError(f"blob {digest} is not in the cache at {self.root}: rebuild, or pull the image again") from None

    def size(self, digest: Digest | str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            record = self.record_of(digest)
            if record is None:
                raise
            return record.size

    def hold_unchecked(self, record: RefRecord) -> None:
        """Hold ``record`` for this run only: its bytes were not read to check them (see ``_unchecked``)."""
        self._unchecked[record.digest] = record

    def defer_check(self, digest: Digest | str, diff_id: str, check: Callable[[], None]) -> None:
        """Leave ``check`` that blob ``digest`` (held unchecked) unpacks to ``diff_id``
        (``diffid.stage_layer(defer=True)``) for the push that reads the image (``deferred_checks``)."""
        self._checks[(str(digest), diff_id)] = check

    def deferred_checks(self, claims: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Callable[[], None]]:
        """The checks ``defer_check`` left that have not passed yet, of the (blob digest, diff_id)
        pairs in ``claims`` (the image being pushed: not another one read into this cache), in the
        order they were left: a push runs them beside its uploads, sends no such blob before its
        checks passed, and writes no manifest before all did (``registry.push``); a check stays
        until it passed (``check_passed``), so a push tried again runs it again."""
        wanted = set(claims)
        return {claim: check for claim, check in self._checks.items() if claim in wanted}

    def check_passed(self, digest: Digest | str, diff_id: str) -> None:
        self._checks.pop((str(digest), diff_id), None)

    def record_of(self, digest: Digest | str) -> RefRecord | None:
        """What a reader of ``digest`` streams from when it is no file here: its record, or one held
        unchecked for this run; None when neither."""
        return self.ref(digest) or self._unchecked.get(str(digest))

    def confirm_unchecked(self, digest: Digest | str) -> None:
        """A blob held unchecked whose bytes, as read, were found to hash to its digest (a
        registry accepted them): recorded for later runs as any blob held by reference."""
        record = self._unchecked.pop(str(digest), None)
        if record is not None:
            self.put_ref(record)

    def put_ref(self, record: RefRecord) -> Digest:
        """Record a blob by reference (atomically), unless the blob is already a file here."""
        digest = Digest(record.digest)
        if self.stored(digest):
            return digest
        self._put_record(self.ref_path(digest), "ref-", record.to_bytes())
        return digest

    def _put_record(self, final: Path, prefix: str, data: bytes) -> None:
        """Write a small record file atomically: a locked temp file renamed into place."""
        try:
            fd, name = locked_temp(self.tmp_dir, prefix)
        except OSError as exc:
            _raise_os_error(exc, self.root)
            raise
        try:
            with os.fdopen(fd, "wb") as f:  # closed (lock dropped) only once renamed into place
                f.write(data)
                f.flush()
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(name, final)
        except BaseException as exc:
            name.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                _raise_os_error(exc, self.root)
            raise

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
        """Copy a blob from ``stream`` into the store, verifying digest and size as it streams.

        A blob held by reference whose files changed since (see ``RefRecord.fresh``) is
        stored from ``stream`` instead: the copy at hand (a layout's, an archive's) is sound.
        """
        if self.has_current(expected):
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
        self._put_record(self.root / "layers" / f"{key}.json", "layer-",
                         json.dumps(record, sort_keys=True).encode())

    # -- verified diff_ids ---------------------------------------------------
    def verified_diff_id(self, digest: Digest | str) -> str | None:
        """The diff_id a layer blob was verified to unpack to (by decompressing it once), if known."""
        d = digest if isinstance(digest, Digest) else Digest(digest)
        try:
            value = (self.root / "diff_ids" / d.hex).read_text().strip()
            return str(Digest(value))
        except (OSError, ValueError, OciAssembleError):
            return None

    def remember_diff_id(self, digest: Digest | str, diff_id: str) -> None:
        """Record that blob ``digest`` decompresses to ``diff_id`` (verified by the caller)."""
        d = digest if isinstance(digest, Digest) else Digest(digest)
        folder = self.root / "diff_ids"
        try:
            folder.mkdir(exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="diffid-")
            with os.fdopen(fd, "w") as f:
                f.write(str(Digest(diff_id)) + "\n")
            os.replace(name, folder / d.hex)
        except OSError as exc:
            _raise_os_error(exc, self.root)

    def iter_blobs(self) -> Iterator[Path]:
        yield from sorted((self.root / "blobs" / "sha256").iterdir())

    def iter_refs(self) -> Iterator[Path]:
        yield from sorted((self.root / "refs" / "sha256").iterdir())

    # -- upkeep ------------------------------------------------------------
    def verify(self, *, fix: bool = False, tmp_max_age: float = TMP_MAX_AGE) -> CacheReport:
        """Re-hash every blob, check the layer index and ``tmp/``; with ``fix``, remove what is
        unsound. See ``upkeep.verify_cache``."""
        return verify_cache(self, fix=fix, tmp_max_age=tmp_max_age)

    def prune(self, older_than_days: float, *, dry_run: bool = False) -> PruneReport:
        """Remove blobs no layer-index record names, untouched for ``older_than_days`` days.
        See ``upkeep.prune_cache``."""
        return prune_cache(self, older_than_days, dry_run=dry_run)
