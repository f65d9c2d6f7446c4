"""The Debian packages layer of a build: the project's ``apt`` packages, and what serving needs
that the base lacks, from the base's own release and architecture (``ociassemble.debian``).

Used by the recipe (between the base and runit-nginx) and by a plain build (``--plain
--base IMAGE --apt-package NAME``: on top of the base). ``ociassemble lock`` resolves the same
packages (``resolve_debian``) and pins their files; a locked build then takes exactly those
(``debian_layer(locked=…)``): no Packages index is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable

from ..errors import BuildError, InputError
from ..image.assemble import Image
from ..image.cache import BlobCache
from ..image.compress import Compression
from .project import Project

if TYPE_CHECKING:
    from pathlib import Path

    from ..debian.install import PackagesLayer
    from ..debian.locked import LockedDeb
    from ..debian.packages import Package
    from ..debian.repository import Target
    from ..debian.resolve import Installed
    from .baseinfo import BaseDebian

__all__ = ["SERVING_PACKAGES", "debian_layer", "debian_requests", "resolve_debian"]

#: what a base lacks (``BaseInfo.missing``) → the Debian package that brings it
SERVING_PACKAGES = {"nginx": "nginx-light", "runsvdir": "runit"}


def debian_requests(project: Project, serving: Sequence[str]) -> list[str]:
    """What is asked for: the project's packages, then the serving packages the base lacks."""
    return [*project.apt, *(s for s in serving if s not in project.apt)]


def _target(project: Project, cache: BlobCache, base: Image, base_spec: str,
            serving: Sequence[str]) -> "tuple[Target, BaseDebian]":
    from ..debian.repository import debian_arch, target_from_os_release
    from .baseinfo import base_debian

    deb = base_debian(base, cache)
    try:
        target = target_from_os_release(deb.os_release, debian_arch(base.platform.architecture,
                                                                     base.platform.variant), f"base {base_spec}")
    except InputError as exc:
        if not serving:
            raise
        lacks = ", ".join(m for m, pkg in SERVING_PACKAGES.items() if pkg in serving)
        raise BuildError(f"base {base_spec} has no {lacks}, and they cannot be added ({exc}); use a base that has "
                         "python3, nginx and runit's runsvdir (e.g. 'ociassemble make-base') or a Debian-based "
                         "one with python3") from None
    return target, deb


def resolve_debian(project: Project, cache: BlobCache, base: Image, base_spec: str, serving: Sequence[str],
                   log: Callable[[str], None]) -> "list[Package]":
    """The packages a build adds over ``base`` (sorted by name; empty when it has them all), resolved
    against the release's signed indexes today: what ``lock`` pins and an unlocked build installs.

    Raises InputError for a base that is not Debian-like, PackageError for a package that
    cannot be resolved or trusted, MirrorError for the network.
    """
    from ..debian.repository import open_repository
    from ..debian.status import installed_from_status

    if not project.apt and not serving:
        return []
    target, deb = _target(project, cache, base, base_spec, serving)
    repo = open_repository(cache, target, apt_mirror=project.apt_mirror, keyring=project.apt_keyring)
    return repo.resolve(debian_requests(project, serving), installed_from_status(deb.status, *deb.status_d))


def debian_layer(project: Project, cache: BlobCache, base: Image, base_spec: str, serving: list[str],
                 compression: Compression, epoch: int, log: Callable[[str], None],
                 locked: "Sequence[LockedDeb] | None" = None) -> "PackagesLayer | None":
    """The layer of the project's Debian packages and the serving packages the base lacks, from the
    base's own release and architecture (its os-release and dpkg status); None when the base has them all.

    ``locked``: the lock's packages for this platform: exactly those files are installed (from the
    cache by SHA256, else by their pool path from the machine's mirror), no index is read; each
    package asked for must be among them or in the base.

    Raises InputError for a base that is not Debian-like or a lock that does not cover what is
    asked for, PackageError for a package that cannot be resolved, fetched or trusted, MirrorError
    for the network.
    """
    from ..debian.fetch import Fetcher
    from ..debian.install import packages_layer
    from ..debian.locked import fetch_locked
    from ..debian.repository import open_repository
    from ..debian.sources import repositories_for
    from ..debian.status import installed_from_status

    target, deb = _target(project, cache, base, base_spec, serving)
    if serving:
        log(f"the base has no {', '.join(serving)}: added from {target}")
    installed = installed_from_status(deb.status, *deb.status_d)
    requests = debian_requests(project, serving)
    fetch = None
    if locked is not None:
        _check_covered(requests, locked, installed)
        fetcher = Fetcher(cache)
        mirrors = list(dict.fromkeys(r.uri for r in repositories_for(
            target.release, target.distro, apt_mirror=project.apt_mirror, keyring=project.apt_keyring)))
        in_order = sorted(locked, key=lambda d: d.name)
        chosen = [d.package() for d in in_order]

        def fetch(_: "list[Package]") -> "list[Path]":  # type: ignore[misc]
            return fetch_locked(fetcher, in_order, mirrors)
    else:
        repo = open_repository(cache, target, apt_mirror=project.apt_mirror, keyring=project.apt_keyring)
        fetcher = repo.fetcher
        chosen = repo.resolve(requests, installed)
    if not chosen:
        log(f"debian packages: the base already has {', '.join(project.apt)}")
        return None
    log(f"debian packages from {target}{' (as ociassemble.lock pins them)' if locked is not None else ''}: "
        + ", ".join(f"{p.name} {p.version}" for p in chosen))
    made = packages_layer(cache, fetcher, chosen, base_status=deb.status, merged_usr=deb.merged_usr,
                          compression=compression, epoch=epoch, log=log, fetch=fetch)
    for note in made.notes:
        if "postinst was not run" in note:
            log(note)
    return made


def _check_covered(requests: Sequence[str], locked: "Sequence[LockedDeb]", installed: "Installed") -> None:
    """Each package asked for is locked (in a version that meets the request) or in the base already.
    Raises InputError otherwise: the lock is not of these inputs."""
    from ..debian.resolve import parse_request
    from ..debian.version import satisfies

    names = {d.name: d for d in locked}
    for text in requests:
        rel = parse_request(text)
        have = names.get(rel.name)
        if (have is None or not satisfies(have.version, rel)) and not installed.meets(rel):
            raise InputError(f"ociassemble.lock pins no Debian package for {text!r}, which the build asks for: "
                             "run 'ociassemble lock' and commit it")
