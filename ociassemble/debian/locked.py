"""Debian packages as ``ociassemble.lock`` pins them, and fetching exactly those ``.deb`` files again.

A locked package is what its Packages stanza said when the lock was made: name, version,
architecture, SHA256, size and the pool path (``Filename``, relative to the mirror's root, so
no mirror host, let alone one with credentials, is written). A locked build reads no Packages
index: each file is taken from the blob cache by its SHA256, else fetched by its pool path from
the mirrors this machine serves the release from (the first that has it), and checked against
the locked SHA256. The archive moving on (a security update) changes nothing while the old
``.deb`` is still in the pool or in the cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, PackageError
from ..image.digest import Digest
from ..errors import NotOnMirror
from .fetch import Fetcher
from .packages import Package

__all__ = ["LockedDeb", "fetch_locked"]

#: parallel downloads, as ``install.fetch_debs``
_DOWNLOADS = 8


@dataclass(frozen=True)
class LockedDeb:
    name: str
    version: str
    arch: str
    sha256: str
    filename: str  # the pool path, relative to the mirror: pool/main/t/tool/tool_1.0-1_amd64.deb
    size: int
    multi_arch: str = ""

    @classmethod
    def from_package(cls, p: Package) -> "LockedDeb":
        return cls(p.name, p.version, p.architecture, p.sha256, p.filename, p.size, p.multi_arch)

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "version": self.version, "arch": self.arch, "sha256": self.sha256,
                "filename": self.filename, "size": self.size, "multi_arch": self.multi_arch}

    @classmethod
    def from_json(cls, doc: Mapping[str, object]) -> "LockedDeb":
        try:
            deb = cls(str(doc["name"]), str(doc["version"]), str(doc["arch"]), str(doc["sha256"]),
                      str(doc["filename"]), int(doc.get("size") or 0), str(doc.get("multi_arch") or ""))  # type: ignore[call-overload]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"ociassemble.lock: a Debian package entry cannot be read ({type(exc).__name__}: {exc}); "
                             "run 'ociassemble lock --upgrade' to write it again") from None
        if "://" in deb.filename or deb.filename.startswith("/") or ".." in deb.filename.split("/"):
            raise InputError(f"ociassemble.lock: Debian package {deb.name} {deb.version} has the path "
                             f"{deb.filename!r}, not one inside a mirror (pool/...); run 'ociassemble lock --upgrade'")
        return deb

    def package(self) -> Package:
        """The Package the layer is made of (its dependencies are not needed: nothing is resolved)."""
        return Package(self.name, self.version, self.arch, self.filename, self.sha256, self.size,
                       multi_arch=self.multi_arch)


def fetch_locked(fetcher: Fetcher, debs: Sequence[LockedDeb], mirrors: Sequence[str]) -> list[Path]:
    """Each locked .deb from the cache by its SHA256, else from the first of ``mirrors`` that has its pool path.

    Raises PackageError in one line naming the package and version for a file no mirror has
    any more, or one whose bytes are not the locked SHA256 (nothing is cached then).
    """
    fix = "run 'ociassemble lock --upgrade' to lock the archive's current version"

    def one(d: LockedDeb) -> Path:
        digest = Digest("sha256:" + d.sha256)
        if fetcher.cache.stored(digest):
            return fetcher.cache.path(digest)
        what = f"{d.name} {d.version} (.deb)"
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + d.filename
            try:
                return fetcher.blob(url, d.sha256, d.size or None, what, mismatch=(
                    f"Debian package {d.name} {d.version}: {d.filename} on the mirror does not match the sha256 "
                    f"ociassemble.lock pins ({d.sha256}); the file was changed: nothing was cached; check the "
                    f"mirror, or {fix}"))
            except NotOnMirror:
                continue
        raise PackageError(f"Debian package {d.name} {d.version} locked in ociassemble.lock is no longer on the "
                           f"mirror ({d.filename}) nor in the cache: {fix} (or give --apt-mirror a snapshot archive "
                           "that still has it)")

    with ThreadPoolExecutor(_DOWNLOADS) as pool:
        return list(pool.map(one, debs))
