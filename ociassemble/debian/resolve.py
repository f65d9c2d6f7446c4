"""Which packages to add: the ones asked for and everything their ``Depends``/``Pre-Depends`` need,
less what the base's dpkg status already has.

As ``apt-get install --no-install-recommends`` chooses, for one architecture: the
newest version that meets a relation; of a clause's alternatives the first that
is installed, already chosen or available, in that order; a virtual package by
its providers (sorted by name: the same choice on every machine). ``Recommends``,
``Suggests``, ``Conflicts`` and ``Breaks`` are not followed (what distroless does too).
A base package too old for a relation is replaced by the index's version.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..errors import PackageError
from .packages import Package, PackageIndex
from .version import Relation, parse_relations, satisfies

__all__ = ["Installed", "resolve", "parse_request"]


@dataclass(frozen=True)
class Installed:
    """What a base has: package → version, and virtual name → the versions provided (``""``: unversioned)."""

    versions: Mapping[str, str] = field(default_factory=dict)
    provides: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def meets(self, rel: Relation) -> bool:
        v = self.versions.get(rel.name)
        if v is not None and satisfies(v, rel):
            return True
        return any((not rel.op) or (pv and satisfies(pv, rel)) for pv in self.provides.get(rel.name, ()))


def parse_request(text: str) -> Relation:
    """``NAME``, ``NAME=VERSION`` (apt's pin) or ``NAME (>= VERSION)``. Raises PackageError otherwise."""
    text = text.strip()
    m = re.fullmatch(r"([a-z0-9][a-z0-9+.-]+)=([A-Za-z0-9.+~:-]+)", text)
    if m:
        return Relation(m.group(1), "=", m.group(2))
    try:
        clauses = parse_relations(text)
    except ValueError:
        clauses = []
    if len(clauses) != 1 or len(clauses[0]) != 1:
        raise PackageError(f"apt package {text!r}: give one Debian package name, e.g. libgomp1, libgomp1=12.2.0-14 "
                           "or 'libgomp1 (>= 12)'")
    return clauses[0][0]


def _provides(pkg: Package, rel: Relation) -> bool:
    return any(p.name == rel.name and ((not rel.op) or (p.op == "=" and satisfies(p.version, rel)))
               for p in pkg.provides)


def resolve(index: PackageIndex, requests: Iterable[Relation], installed: Installed, *,
            where: str) -> list[Package]:
    """The packages to add, sorted by name. ``where`` names the release for messages
    (``debian bookworm amd64``).

    Raises PackageError naming an unknown package, or the package whose dependency
    nothing in the release satisfies.
    """
    chosen: dict[str, Package] = {}

    def met(alts: tuple[Relation, ...]) -> bool:
        for rel in alts:
            pkg = chosen.get(rel.name)
            if pkg is not None and satisfies(pkg.version, rel):
                return True
            if rel.name not in chosen and installed.meets(rel):
                return True
            if any(_provides(p, rel) for p in chosen.values()):
                return True
        return False

    def pick(alts: tuple[Relation, ...]) -> Package | None:
        for rel in alts:
            for pkg in index.versions(rel.name):
                if satisfies(pkg.version, rel):
                    return pkg
            providers = [p for p in index.providers(rel.name) if _provides(p, rel)]
            if providers:
                return providers[0]
        return None

    todo: deque[tuple[tuple[Relation, ...], Package | None]] = deque()
    for rel in requests:
        if not index.versions(rel.name) and not index.providers(rel.name):
            raise PackageError(f"no package {rel.name!r} in {where}: check its name (packages.debian.org, or "
                               "'apt-cache policy NAME' on that release)")
        # asked for by name: added even when the base has it, unless its version there meets the request
        todo.append(((rel,), None))
    while todo:
        alts, wanted_by = todo.popleft()
        if met(alts):
            continue
        pkg = pick(alts)
        if pkg is None:
            need = " | ".join(str(a) for a in alts)
            have = ", ".join(p.version for a in alts for p in index.versions(a.name)) or "none"
            if wanted_by is None:
                raise PackageError(f"no version of {need} in {where} (it has: {have}); change the version asked for")
            raise PackageError(f"{wanted_by.name} {wanted_by.version} depends on {need}, which nothing in {where} "
                               f"satisfies (versions there: {have}); the repository is incomplete or mixes releases")
        if pkg.name in chosen:
            raise PackageError(f"{pkg.name}: two versions are needed at once ({chosen[pkg.name].version} and "
                               f"{pkg.version}) in {where}; pin one with NAME=VERSION")
        chosen[pkg.name] = pkg
        for clause in pkg.depends:
            todo.append((clause, pkg))
    return sorted(chosen.values(), key=lambda p: p.name)
