"""Making ``ociassemble.lock`` and deciding, for a build, whether it holds.

A lock holds when the normalised inputs it was made from (``lock_inputs``: the merged
requirements, the package indexes the requirements file names, and the Debian packages asked
for with ``apt``) are the project's now, and it has a
section for the platform being built. A build then installs exactly its files and takes
the base by its digest. When it does not hold:

- ``--locked`` (``mode="locked"``, for CI): one line, exit 1, nothing built;
- otherwise: one warning line, and the build resolves as if there were no lock (the lock
  is left as it is: only ``ociassemble lock`` writes it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..debian.locked import LockedDeb
from ..errors import BuildError, InputError
from ..image.cache import BlobCache
from ..image.oci import Platform
from ..image.platform import normalize, parse_platforms
from ..transport.spec import is_registry
from .aptlayer import resolve_debian
from .deps import lock_deps, requirements_file
from .indexes import strip_credentials
from .lockfile import LOCK_NAME, LockFile, PlatformLock, inputs_digest, read_lock, write_lock
from .project import Project
from .pyenv import PythonInputs, python_inputs
from .recipebase import RecipeBase, load_recipe_base

if TYPE_CHECKING:
    from ..registry.client import RegistryOptions

__all__ = ["LockMode", "LockResult", "debian_unpinned", "lock_inputs", "lock_path", "lock_project", "lock_section", "lock_summary", "usable_lock"]

#: "use": the lock when it holds, a warning when it is stale; "locked": a stale lock is an error;
#: "off": no lock (``lock`` itself, or a program that wants a fresh resolve)
LockMode = Literal["use", "locked", "off"]


def lock_path(project: Project) -> Path:
    """Where the project's lock lives: beside its config file, else in the project folder."""
    return (project.config_file.parent if project.config_file is not None else project.root) / LOCK_NAME


def _stale(path: Path, why: str, mode: LockMode, log: Callable[[str], None]) -> None:
    if mode == "locked":
        raise InputError(f"{path} does not match the inputs ({why}): run 'ociassemble lock' and commit it "
                         "(--locked builds only what the lock pins)")
    log(f"warning: {path} is out of date ({why}): resolving without it; run 'ociassemble lock' to update it")


def lock_inputs(project: Project, inputs: PythonInputs) -> str:
    """The digest a lock is made from: the Python inputs and, when there are any, the ``apt`` packages
    (sorted: their order changes nothing; a project without any keeps the digest it had before)."""
    normalised = inputs.normalised()
    if project.apt:
        normalised["apt"] = sorted(set(project.apt))
    return inputs_digest(normalised)


def usable_lock(project: Project, inputs: PythonInputs, mode: LockMode, log: Callable[[str], None]) -> LockFile | None:
    """The project's lock if it holds for these inputs, else None (after a warning), or an error with ``locked``."""
    if mode == "off":
        return None
    path = lock_path(project)
    lock = read_lock(path)
    if lock is None:
        if mode == "locked":
            raise InputError(f"--locked: there is no {path}; run 'ociassemble lock' and commit it")
        return None
    if lock.inputs != lock_inputs(project, inputs):
        _stale(path, "the requirements, package indexes or apt packages changed since it was written", mode, log)
        return None
    return lock


def debian_unpinned(project: Project, mode: LockMode, log: Callable[[str], None]) -> None:
    """A lock that pins no Debian packages for a build that adds some: an error with ``--locked``,
    else a warning (the packages are then resolved against the archive as it is today)."""
    _stale(lock_path(project), "it pins no Debian packages, and this build adds some", mode, log)


def lock_section(lock: LockFile, platform: Platform | None, mode: LockMode, project: Project,
                 log: Callable[[str], None]) -> PlatformLock | None:
    """The lock's section for ``platform`` (None: the lock's one platform), or None after a warning."""
    if platform is None and len(lock.platforms) == 1:
        return next(iter(lock.platforms.values()))
    key = str(normalize(platform)) if platform is not None else None
    if key is not None and key in lock.platforms:
        return lock.platforms[key]
    _stale(lock_path(project), f"it has no section for {key or 'this build'}; it locks {', '.join(sorted(lock.platforms))}",
           mode, log)
    return None


@dataclass
class LockResult:
    """What ``lock_project`` wrote (or found already written)."""

    path: Path
    lock: LockFile
    written: bool  # False: the file already said exactly that
    notes: list[str]

    def to_json(self) -> dict[str, Any]:
        return lock_summary(self)

    def line(self) -> str:
        """One line: the file, and per platform its base and how much it pins."""
        parts = [f"{key}: base {p.base_digest[:19]}…, {len(p.distributions)} Python distributions"
                 + (f", {len(p.debian)} Debian packages" if p.debian else "")
                 for key, p in sorted(self.lock.platforms.items())]
        return f"{'wrote' if self.written else 'unchanged'} {self.path} ({'; '.join(parts)})"


def _keep_versions(old: PlatformLock | None, inputs: PythonInputs, upgrade: Sequence[str] | None) -> list[str]:
    """``name==version`` of the old lock's distributions a re-lock keeps: all but those upgraded, and
    but those a changed requirement no longer admits."""
    if old is None or upgrade == []:
        return []
    skip = {canonicalize_name(n) for n in upgrade or ()}
    wanted: dict[str, Requirement] = {}
    for line in inputs.merged.lines:
        try:
            req = Requirement(line.strip())
        except InvalidRequirement:
            continue
        wanted[canonicalize_name(req.name)] = req
    keep = []
    for d in old.distributions:
        name = canonicalize_name(d.name)
        if name in skip:
            continue
        req = wanted.get(name)
        try:
            if req is not None and (req.url or not req.specifier.contains(Version(d.version), prereleases=True)):
                continue
        except InvalidVersion:
            continue
        keep.append(f"{d.name}=={d.version}")
    return sorted(keep)


def lock_project(project: Project, cache: BlobCache, *, platforms: str | Sequence[str] | None = None,
                 upgrade: Sequence[str] | None = None, registry_options: RegistryOptions | None = None,
                 log: Callable[[str], None] = lambda _: None, debug: bool = False) -> LockResult:
    """Write ``ociassemble.lock`` for ``project`` on each of ``platforms`` (default: the project's, else the base's).

    ``upgrade``: None keeps what an existing lock pins where the inputs still admit it (a
    registry base's digest, each distribution's version), and runs no pex when the inputs and
    every base are still the lock's; ``[]`` re-resolves everything (a registry base's tag is
    read again); names re-resolve those distributions only.

    Raises BuildError/InputError in one line (pex's reason when the requirements cannot be
    locked for a platform); nothing is written then.
    """
    inputs = python_inputs(project, log)
    path = lock_path(project)
    old = _old_lock(path, upgrade, log)
    wanted = platforms if platforms is not None else project.platforms
    targets: list[Platform | None] = list(parse_platforms(wanted)) if wanted else [None]
    if project.base is None and None not in targets:
        from .debianbase import require_default_bases

        require_default_bases(cache, targets, inputs.python)  # every platform's, before any is locked
    digest = lock_inputs(project, inputs)
    # every platform's base first (cheap): when nothing moved, there is nothing for pex to do
    bases = []
    for platform in targets:
        old_section = _old_section(old, platform)
        base = _load_base(project, cache, platform, old_section, upgrade, inputs, registry_options)
        bases.append(_LockedBase(platform, old_section, base))
    if old is not None and upgrade is None and _still_holds(project, old, digest, bases):
        return LockResult(path, old, write_lock(path, old), list(inputs.merged.notes))
    sections: dict[str, PlatformLock] = {}
    for b in bases:
        key = str(normalize(b.base.image.platform))
        if len(targets) > 1 or b.platform is not None:
            log(f"platform {key}")
        inputs = inputs.for_python(b.base.info.python)  # a --base's Python: the server's pins for it
        sections[key] = _lock_platform(project, cache, key, b, inputs, upgrade, log, debug)
    lock = LockFile(digest, sections)
    written = write_lock(path, lock)
    return LockResult(path, lock, written, list(inputs.merged.notes))


@dataclass(frozen=True)
class _LockedBase:
    """One platform to lock: the platform asked for, the old lock's section for it, its base now."""

    platform: Platform | None
    old_section: PlatformLock | None
    base: RecipeBase


def _old_lock(path: Path, upgrade: Sequence[str] | None, log: Callable[[str], None]) -> LockFile | None:
    """The lock there is (None: none, or unreadable after a warning); InputError when ``upgrade`` names
    a distribution it does not lock."""
    try:
        old = read_lock(path)
    except InputError as exc:
        log(f"warning: {exc}; writing a new one")
        return None
    if old is not None and upgrade:
        known = {canonicalize_name(d.name) for p in old.platforms.values() for d in p.distributions}
        unknown = [n for n in upgrade if canonicalize_name(n) not in known]
        if unknown:
            raise InputError(f"--upgrade {' '.join(unknown)}: not in {path} (it locks "
                             f"{', '.join(sorted(known)) or 'nothing'}); name a locked distribution, or give no name "
                             "to re-resolve all")
    return old


def _load_base(project: Project, cache: BlobCache, platform: Platform | None, old_section: PlatformLock | None,
               upgrade: Sequence[str] | None, inputs: PythonInputs, registry_options: RegistryOptions | None) -> RecipeBase:
    """The platform's base to lock: a registry base kept by the old digest unless everything is upgraded
    (its tag is then read again); any other base as it is now (its old digest cannot be fetched)."""
    keep_base = old_section.base_digest if old_section is not None and upgrade is None and \
        is_registry(project.base) and old_section.base_spec == _base_name(project, platform) else None
    return load_recipe_base(project, cache, platform=platform, inputs=inputs, registry_options=registry_options,
                            locked_digest=keep_base)


def _still_holds(project: Project, old: LockFile, digest: str, bases: list[_LockedBase]) -> bool:
    """Whether ``old`` is the lock these inputs and bases would give (nothing for pex to do)."""
    return old.inputs == digest and len(old.platforms) == len(bases) and all(
        o is not None and o.base_digest == b.base.image.digest and o.base_spec == _base_name(project, b.platform)
        # a lock from before locks pinned Debian packages, for a base that lacks nginx or runit
        and (o.debian or project.apt or not b.base.serving)
        for b in bases for o in [b.old_section])


def _lock_platform(project: Project, cache: BlobCache, key: str, b: _LockedBase, inputs: PythonInputs,
                   upgrade: Sequence[str] | None, log: Callable[[str], None], debug: bool) -> PlatformLock:
    """The lock's section for one platform: pex's files (keeping the old versions the inputs admit) and
    the Debian packages layer's .debs."""
    keep = _keep_versions(b.old_section, inputs, upgrade)
    with requirements_file(cache, inputs.merged.text()) as req_file:
        try:
            dists, fields = lock_deps(cache, [req_file], b.base.info, indexes=inputs.indexes, constraints=keep,
                                      log=log, source=inputs.source, debug=debug)
        except BuildError:
            if not keep:
                raise
            log("the versions locked before do not fit the inputs now: re-resolving every distribution")
            dists, fields = lock_deps(cache, [req_file], b.base.info, indexes=inputs.indexes, log=log,
                                      source=inputs.source, debug=debug)
    debs = resolve_debian(project, cache, b.base.image, b.base.spec, b.base.serving, log)
    if debs:
        log("debian packages locked: " + ", ".join(f"{p.name} {p.version}" for p in debs))
    return PlatformLock(key, _base_name(project, b.platform), b.base.image.digest, dists, fields,
                        tuple(LockedDeb.from_package(p) for p in debs))


def _old_section(old: LockFile | None, platform: Platform | None) -> PlatformLock | None:
    if old is None:
        return None
    if platform is None:
        return next(iter(old.platforms.values())) if len(old.platforms) == 1 else None
    return old.platforms.get(str(normalize(platform)))


#: what a lock says the base is when the project names none (the cache's path differs between machines)
DEFAULT_BASE_NAME = "default (ociassemble make-base)"


def _base_name(project: Project, platform: Platform | None) -> str:
    """The base a lock section names: the project's spec, or the default base (never its machine's path)."""
    return strip_credentials(project.base) if project.base else DEFAULT_BASE_NAME


def lock_summary(result: LockResult) -> dict[str, Any]:
    """What ``ociassemble lock`` prints with ``--json``: the file, and per platform its base and distributions."""
    return {"lock": str(result.path), "written": result.written, "inputs": result.lock.inputs,
            "platforms": {k: {"base": p.base_digest, "distributions": len(p.distributions),
                              "python": {d.name: d.version for d in p.distributions},
                              "debian": {d.name: d.version for d in p.debian}}
                          for k, p in sorted(result.lock.platforms.items())}}
