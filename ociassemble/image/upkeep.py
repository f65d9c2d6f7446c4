"""Keeping the blob store sound: verify re-hashes every entry, prune drops old unindexed ones.

Both are safe beside running builds (a blob is removed only if its content is wrong or
nothing indexes it, a temp file only when nobody writes it: ``tmplock``), and both say
what they found in a report the CLI prints or gives as JSON.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OciAssembleError
from .blobref import verify_record
from .digest import Digest, sha256_file
from .tmplock import tmp_state

if TYPE_CHECKING:
    from .cache import BlobCache

__all__ = ["CacheReport", "PruneReport", "TMP_MAX_AGE", "prune_cache", "verify_cache"]

#: A temp entry nobody holds a lock on (a folder pex fills, a requirements file) is only
#: taken for abandoned after this long: no build step keeps one that long (pex resolves
#: take minutes), and a concurrent build's files are never removed under it.
TMP_MAX_AGE = 3600.0
_HEX = re.compile(r"^[0-9a-f]{64}$")


def verify_cache(cache: BlobCache, *, fix: bool = False, tmp_max_age: float = TMP_MAX_AGE) -> CacheReport:
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
    for path in cache.iter_blobs():
        if not _HEX.match(path.name) or not path.is_file() or path.is_symlink():
            report.stray.append(path.name)
            if fix:
                _remove(path, report, cache.root)
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
                _remove(path, report, cache.root)
    for path in cache.iter_refs():
        record = cache.ref("sha256:" + path.name) if _HEX.match(path.name) and not path.is_symlink() else None
        if record is None:
            if not path.exists():
                continue  # removed by a concurrent verify
            report.stray.append(f"refs/{path.name}")
            if fix:
                _remove(path, report, cache.root)
            continue
        report.refs += 1
        report.ref_bytes += record.size
        problem = verify_record(record)
        if problem:
            report.changed.append(f"{record.digest}: {problem}")
            if fix:
                _remove(path, report, cache.root)
    now = time.time()
    for entry in sorted(cache.tmp_dir.iterdir()):
        state = tmp_state(entry, now, tmp_max_age, remove=fix)
        if state == "stale":
            report.stale_tmp.append(entry.name)
            if fix:
                _remove(entry, report, cache.root)
        elif state == "removed":  # removed while its lock was held (see tmplock.tmp_state)
            report.stale_tmp.append(entry.name)
            report.removed.append(str(entry.relative_to(cache.root)))
        else:
            report.busy_tmp.append(entry.name)
    for record_path in sorted((cache.root / "layers").glob("*.json")):
        problem = _index_problem(record_path, cache)
        if problem:
            report.broken_index.append(f"{record_path.stem}: {problem}")
            if fix:
                _remove(record_path, report, cache.root)
    return report

def prune_cache(cache: BlobCache, older_than_days: float, *, dry_run: bool = False) -> PruneReport:
    """Remove blobs no layer-index record names and not modified for ``older_than_days`` days.

    Such blobs are bases, pulled layers and configs: fetched or rebuilt again when a
    build needs them. Layers the index names stay (they make rebuilds free). A blob
    held by reference goes by the same rule (removing one frees only its record).
    """
    cutoff = time.time() - older_than_days * 86400
    keep: set[str] = set()
    for record_path in (cache.root / "layers").glob("*.json"):
        try:
            keep.add(Digest(json.loads(record_path.read_text())["digest"]).hex)
        except (OSError, ValueError, KeyError, TypeError, OciAssembleError):
            continue
    report = PruneReport(dry_run=dry_run)
    for path in itertools.chain(cache.iter_blobs(), cache.iter_refs()):
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
