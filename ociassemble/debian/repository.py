"""One release of a Debian (or Ubuntu) archive for one architecture: its signed suites, their
Packages indexes, and resolving package names against them.

Example::

    repo = open_repository(cache, Target("debian", "bookworm", "amd64"))
    added = repo.resolve(["libgomp1"], installed_from_status(base_status))
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..image.cache import BlobCache
from .fetch import Fetcher
from .packages import Package, PackageIndex, load_indexes
from .release import Release, fetch_release
from .resolve import Installed, parse_request, resolve
from .sources import repositories_for

__all__ = ["Target", "Repository", "open_repository", "debian_arch", "target_from_os_release"]

#: OCI architecture (and variant) → Debian's name for it, where they differ
_DEB_ARCH = {"arm/v7": "armhf", "arm": "armhf", "arm/v5": "armel", "386": "i386", "ppc64le": "ppc64el"}
#: Debian releases by VERSION_ID, for an os-release that names no codename
_CODENAMES = {"11": "bullseye", "12": "bookworm", "13": "trixie", "14": "forky"}


def debian_arch(architecture: str, variant: str | None = None) -> str:
    """Debian's name for an OCI architecture: ``amd64``, ``arm64``, ``armhf`` (arm/v7), ``i386``…"""
    return _DEB_ARCH.get(f"{architecture}/{variant}" if variant else architecture,
                         _DEB_ARCH.get(architecture, architecture))


@dataclass(frozen=True)
class Target:
    """What packages are fetched for: a distribution's release, one architecture."""

    distro: str  # debian | ubuntu
    release: str  # bookworm
    architecture: str  # Debian's name: amd64

    def __str__(self) -> str:
        return f"{self.distro} {self.release} {self.architecture}"


def target_from_os_release(text: str, architecture: str, where: str) -> Target:
    """The Target of a base from its ``/etc/os-release``. Raises InputError when it is not Debian-like."""
    fields = dict(re.findall(r'^([A-Z_]+)="?([^"\n]*)"?$', text, re.M))
    distro = fields.get("ID", "").lower()
    like = fields.get("ID_LIKE", "").lower().split()
    codename = fields.get("VERSION_CODENAME") or _CODENAMES.get(fields.get("VERSION_ID", ""), "")
    if distro not in ("debian", "ubuntu") and "debian" not in like:
        raise InputError(f"{where} is not Debian or Ubuntu (its /etc/os-release says ID={distro or '?'}): Debian "
                         "packages can only be added to a Debian-based base")
    if not codename:
        raise InputError(f"{where}'s /etc/os-release names no release (VERSION_CODENAME): Debian packages need "
                         "one; use a base of a released Debian (bookworm, trixie, …)")
    return Target(distro if distro in ("debian", "ubuntu") else "debian", codename, architecture)


@dataclass
class Repository:
    """The verified indexes of one Target."""

    target: Target
    fetcher: Fetcher
    releases: list[Release]
    index: PackageIndex

    def resolve(self, names: Sequence[str], installed: Installed = Installed()) -> list[Package]:
        """The packages to add for ``names`` (``NAME``, ``NAME=VERSION``), dependencies included.

        Raises PackageError for an unknown package or a dependency nothing satisfies.
        """
        return resolve(self.index, [parse_request(n) for n in names], installed, where=str(self.target))

    def essential(self) -> list[str]:
        return self.index.essential()


def open_repository(cache: BlobCache, target: Target, *, apt_mirror: str | None = None,
                    keyring: Path | None = None, fetcher: Fetcher | None = None) -> Repository:
    """Fetch and verify ``target``'s InRelease files and Packages indexes (cached by hash).

    Raises InputError when no source serves it, PackageError for a signature or hash that
    does not match, MirrorError for the network.
    """
    if keyring is not None and not keyring.is_file():
        raise InputError(f"apt keyring {keyring} does not exist; give an OpenPGP keyring file (.gpg)")
    fetcher = fetcher or Fetcher(cache)
    repos = repositories_for(target.release, target.distro, apt_mirror=apt_mirror, keyring=keyring)
    releases = [fetch_release(fetcher, r) for r in repos]
    return Repository(target, fetcher, releases, load_indexes(fetcher, releases, target.architecture))
