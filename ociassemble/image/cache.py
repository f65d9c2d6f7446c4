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
A temp file is held under an exclusive ``flock`` by the process writing it, so
``BlobCache.verify`` can tell one left by a killed process (lock free) from one being
written (locked) without guessing from its age; ``ociassemble cache verify`` re-hashes
every blob and removes what is not sound.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from ..errors import ArchiveError, DigestMismatchError, InputError, OciAssembleError
from .blobref import RefReader, RefRecord, verify_record
from .digest import CHUNK, Digest, HashingWriter, VerifyingReader, sha256_file

__all__ = ["BlobCache", "BlobWriter", "CacheReport", "PruneReport", "default_cache_dir", "DiskFullError",
           "disk_full", "TMP_MAX_AGE"]

#: A temp entry nobody holds a lock on (a folder pex fills, a requirements file) is only
#: taken for abandoned after this long: no build step keeps one that long (pex resolves
#: take minutes), and a concurrent build's files are never removed under it.
TMP_MAX_AGE = 3600.0
#: Temp files written under an exclusive flock (see ``_locked_temp``): free lock = dead writer.
_LOCKED_PREFIXES = ("blob-", "layer-", "ref-")
_HEX = re.compile(r"^[0-9a-f]{64}$")


class DiskFullError(OciAssembleError):
    """No space left where ociassemble writes."""


def default_cache_dir() -> Path:
    env = os.environ.get("OCIASSEMBLE_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
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


def _locked_temp(directory: Path, prefix: str) -> tuple[int, Path]:
    """A new temp file in ``directory`` with an exclusive flock held on its descriptor.

    The lock lives as long as the descriptor (a killed process drops it). ``verify``
    removes a temp file only while holding its lock, so a file it removed between our
    ``mkstemp`` and ``flock`` is seen here (no links left) and another one is made.
    """
    while True:
        fd, name = tempfile.mkstemp(dir=directory, prefix=prefix)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:
            return fd, Path(name)
        os.close(fd)


class BlobWriter:
    """A blob being written: hashes as it goes, lands under its digest on ``commit``.

    ``hashed=False`` is for a caller that hashes the very same bytes itself (an
    uncompressed layer: digest = diff_id): nothing is hashed here, and ``commit`` must
    be given that digest, which it trusts.
    """

    def __init__(self, cache: "BlobCache", hashed: bool = True) -> None:
        self._cache = cache
        fd, self._tmp = _locked_temp(cache.tmp_dir, "blob-")
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
        return self.path(digest).is_file() or self.ref_path(digest).is_file()

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
            record = self.ref(digest)
            if record is not None:
                return RefReader(record, hashed=not receiver_verifies)  # type: ignore[return-value]
            raise ArchiveError(f"blob {digest} is not in the cache at {self.root}: rebuild, or pull the image again") from None

    def size(self, digest: Digest | str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            record = self.ref(digest)
            if record is None:
                raise
            return record.size

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
            fd, name = _locked_temp(self.tmp_dir, prefix)
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
    def verify(self, *, fix: bool = False, tmp_max_age: float = TMP_MAX_AGE) -> "CacheReport":
        """Re-hash every blob and check the layer index and ``tmp/``; with ``fix``, remove what is unsound.

        Unsound: a blob whose content does not hash to its name (or a file in
        ``blobs/sha256`` not named by a digest); a blob held by reference whose files no
        longer read back to its digest (changed or deleted since the build: each is read
        and hashed again); a temp file whose writer is gone (its
        lock is free), or any other ``tmp/`` entry older than ``tmp_max_age`` seconds; a
        layer-index record that is unreadable or names a missing blob or a wrong size.
        Safe beside running builds: a blob is removed only if its content is wrong, and a
        temp file only when nobody writes it.

        Example::

            report = BlobCache(Path("~/.cache/ociassemble").expanduser()).verify(fix=True)
            print(report.summary())
        """
        report = CacheReport(fixed=fix)
        for path in self.iter_blobs():
            if not _HEX.match(path.name) or not path.is_file() or path.is_symlink():
                report.stray.append(path.name)
                if fix:
                    _remove(path, report, self.root)
                continue
            try:
                actual, size = sha256_file(str(path))
            except FileNotFoundError:
                continue  # removed by a concurrent verify
            report.blobs += 1
            report.bytes += size
            if actual.hex != path.name:
                report.corrupt.append(f"sha256:{path.name}")
                if fix:
                    _remove(path, report, self.root)
        for path in self.iter_refs():
            record = self.ref("sha256:" + path.name) if _HEX.match(path.name) and not path.is_symlink() else None
            if record is None:
                if not path.exists():
                    continue  # removed by a concurrent verify
                report.stray.append(f"refs/{path.name}")
                if fix:
                    _remove(path, report, self.root)
                continue
            report.refs += 1
            report.ref_bytes += record.size
            problem = verify_record(record)
            if problem:
                report.changed.append(f"{record.digest}: {problem}")
                if fix:
                    _remove(path, report, self.root)
        now = time.time()
        for entry in sorted(self.tmp_dir.iterdir()):
            state = _tmp_state(entry, now, tmp_max_age, remove=fix)
            if state == "stale":
                report.stale_tmp.append(entry.name)
                if fix:
                    _remove(entry, report, self.root)
            elif state == "removed":  # removed while its lock was held (see _tmp_state)
                report.stale_tmp.append(entry.name)
                report.removed.append(str(entry.relative_to(self.root)))
            else:
                report.busy_tmp.append(entry.name)
        for record_path in sorted((self.root / "layers").glob("*.json")):
            problem = _index_problem(record_path, self)
            if problem:
                report.broken_index.append(f"{record_path.stem}: {problem}")
                if fix:
                    _remove(record_path, report, self.root)
        return report

    def prune(self, older_than_days: float, *, dry_run: bool = False) -> "PruneReport":
        """Remove blobs no layer-index record names and not modified for ``older_than_days`` days.

        Such blobs are bases, pulled layers and configs: fetched or rebuilt again when a
        build needs them. Layers the index names stay (they make rebuilds free). A blob
        held by reference goes by the same rule (removing one frees only its record).
        """
        cutoff = time.time() - older_than_days * 86400
        keep: set[str] = set()
        for record_path in (self.root / "layers").glob("*.json"):
            try:
                keep.add(Digest(json.loads(record_path.read_text())["digest"]).hex)
            except (OSError, ValueError, KeyError, TypeError, OciAssembleError):
                continue
        report = PruneReport(dry_run=dry_run)
        for path in itertools.chain(self.iter_blobs(), self.iter_refs()):
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if path.name in keep or st.st_mtime > cutoff:
                report.kept += 1
                continue
            report.removed.append(f"sha256:{path.name}")
            report.bytes += st.st_size
            if not dry_run:
                path.unlink(missing_ok=True)
        return report


def _remove(path: Path, report: "CacheReport", root: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    report.removed.append(str(path.relative_to(root)))


def _tmp_state(entry: Path, now: float, max_age: float, *, remove: bool) -> str:
    """``busy`` (being written, or recent), ``stale`` (abandoned), or ``removed`` (abandoned
    and, with ``remove``, already unlinked while its lock was held: see ``_locked_temp``)."""
    try:
        st = entry.lstat()
    except FileNotFoundError:
        return "busy"  # gone already: its writer committed or cleaned up
    if entry.name.startswith(_LOCKED_PREFIXES) and entry.is_file() and not entry.is_symlink():
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return "busy"
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return "busy"
            try:
                same = os.stat(entry, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                return "busy"  # renamed into place (committed) or removed meanwhile
            if remove:
                entry.unlink(missing_ok=True)  # under the lock: a writer racing us sees no link and retries
                return "removed"
            return "stale"
        finally:
            os.close(fd)
    return "stale" if now - st.st_mtime > max_age else "busy"


def _index_problem(record_path: Path, cache: BlobCache) -> str:
    """What is wrong with one layer-index record ('' if nothing)."""
    try:
        record = json.loads(record_path.read_text())
        digest = Digest(record["digest"])
        size = int(record["size"])
    except FileNotFoundError:
        return ""
    except (OSError, ValueError, KeyError, TypeError, OciAssembleError):
        return "unreadable record"
    try:
        actual = cache.path(digest).stat().st_size
    except FileNotFoundError:
        ref = cache.ref(digest)
        if ref is None:
            return f"blob {digest} is missing"
        actual = ref.size
    if actual != size:
        return f"blob {digest} is {actual} bytes, the record says {size}"
    return ""


@dataclass
class CacheReport:
    """What ``BlobCache.verify`` found (and, with ``fixed``, removed)."""

    fixed: bool = False
    blobs: int = 0
    bytes: int = 0
    refs: int = 0  # blobs held by reference, read back from their files
    ref_bytes: int = 0
    changed: list[str] = field(default_factory=list)  # "digest: reason" of references whose files changed
    corrupt: list[str] = field(default_factory=list)  # digests whose content does not match
    stray: list[str] = field(default_factory=list)  # files in blobs/sha256 not named by a digest
    stale_tmp: list[str] = field(default_factory=list)  # tmp/ entries of writers that are gone
    busy_tmp: list[str] = field(default_factory=list)  # tmp/ entries in use (or recent): kept
    broken_index: list[str] = field(default_factory=list)  # "key: problem"
    removed: list[str] = field(default_factory=list)  # paths relative to the cache root

    @property
    def problems(self) -> int:
        return len(self.corrupt) + len(self.stray) + len(self.stale_tmp) + len(self.broken_index) + len(self.changed)

    @property
    def clean(self) -> bool:
        """Nothing unsound was found."""
        return self.problems == 0

    def to_json(self) -> dict[str, Any]:
        return {"clean": self.clean, "fixed": self.fixed, "blobs": self.blobs, "bytes": self.bytes,
                "refs": self.refs, "refBytes": self.ref_bytes, "changed": self.changed,
                "corrupt": self.corrupt, "stray": self.stray, "staleTmp": self.stale_tmp,
                "busyTmp": self.busy_tmp, "brokenIndex": self.broken_index, "removed": self.removed}

    def summary(self) -> str:
        head = f"{self.blobs} blobs ({self.bytes} bytes) re-hashed"
        if self.refs:
            head += f", {self.refs} held by reference ({self.ref_bytes} bytes) read back from their files"
        if self.clean:
            return f"{head}: the cache is clean"
        parts = []
        for label, items in (("corrupt blobs", self.corrupt),
                             ("references to files changed since the build", self.changed), ("stray files in blobs/", self.stray),
                             ("abandoned temp files", self.stale_tmp),
                             ("layer-index records", self.broken_index)):
            if items:
                parts.append(f"{len(items)} {label} ({', '.join(items[:5])}{', …' if len(items) > 5 else ''})")
        tail = "removed" if self.fixed else "run 'ociassemble cache verify --fix' to remove them"
        return f"{head}; found {'; '.join(parts)}: {tail}"


@dataclass
class PruneReport:
    """What ``BlobCache.prune`` removed (or, with ``dry_run``, would remove)."""

    dry_run: bool = False
    kept: int = 0
    bytes: int = 0
    removed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"dryRun": self.dry_run, "kept": self.kept, "bytes": self.bytes, "removed": self.removed}
