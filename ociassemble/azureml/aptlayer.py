"""The Debian packages layer of a build: the project's ``apt`` packages, and what serving needs
that the base lacks, from the base's own release and architecture (``ociassemble.debian``).

Used by the recipe (between the base and runit-nginx) and by a plain build (``--plain
--base IMAGE --apt-package NAME``: on top of the base).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ..errors import BuildError, InputError
from ..image.assemble import Image
from ..image.cache import BlobCache
from ..image.compress import Compression
from .project import Project

if TYPE_CHECKING:
    from ..debian.install import PackagesLayer

__all__ = ["SERVING_PACKAGES", "debian_layer"]

#: what a base lacks (``BaseInfo.missing``) → the Debian package that brings it
SERVING_PACKAGES = {"nginx": "nginx-light", "runsvdir": "runit"}


def debian_layer(project: Project, cache: BlobCache, base: Image, base_spec: str, serving: list[str],
                 compression: Compression, epoch: int, log: Callable[[str], None]) -> "PackagesLayer | None":
    """The layer of the project's Debian packages and the serving packages the base lacks, from the
    base's own release and architecture (its os-release and dpkg status); None when the base has them all.

    Raises InputError for a base that is not Debian-like, PackageError for a package that
    cannot be resolved or trusted, MirrorError for the network.
    """
    from ..debian.install import packages_layer
    from ..debian.repository import debian_arch, open_repository, target_from_os_release
    from ..debian.status import installed_from_status
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
    if serving:
        log(f"the base has no {', '.join(serving)}: added from {target}")
    repo = open_repository(cache, target, apt_mirror=project.apt_mirror, keyring=project.apt_keyring)
    installed = installed_from_status(deb.status, *deb.status_d)
    chosen = repo.resolve([*project.apt, *(s for s in serving if s not in project.apt)], installed)
    if not chosen:
        log(f"debian packages: the base already has {', '.join(project.apt)}")
        return None
    log(f"debian packages from {target}: " + ", ".join(f"{p.name} {p.version}" for p in chosen))
    made = packages_layer(cache, repo.fetcher, chosen, base_status=deb.status, merged_usr=deb.merged_usr,
                          compression=compression, epoch=epoch, log=log)
    for note in made.notes:
        if "postinst was not run" in note:
            log(note)
    return made
