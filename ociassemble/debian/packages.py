"""A release's ``Packages`` indexes: fetched as the signed Release lists them, and read lazily.

Each index file is checked against the Release's SHA256 (``Fetcher.blob``) and cached
by it. An index of ~60 000 stanzas is only split into stanzas and indexed by name and
``Provides`` here; a stanza is parsed into a ``Package`` only when the resolver asks
for it, so a release is ready in well under a second per index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PackageError
from .fetch import Fetcher
from .release import Release
from .version import Relation, compare_versions, parse_relations

__all__ = ["Package", "PackageIndex", "load_indexes"]

#: Index files in the order tried: isal inflates gzip ~3x faster than lzma reads xz.
_FORMATS = (".gz", ".xz", "")


@dataclass(frozen=True)
class Package:
    """One binary package of the archive (a ``Packages`` stanza)."""

    name: str
    version: str
    architecture: str
    filename: str
    sha256: str
    size: int
    depends: tuple[tuple[Relation, ...], ...] = ()
    provides: tuple[Relation, ...] = ()
    essential: bool = False
    priority: str = ""
    multi_arch: str = ""
    #: the repository it is fetched from (``Repository.url`` base)
    uri: str = ""

    @property
    def key(self) -> str:
        return f"{self.name}={self.version}"


def _fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in stanza.split("\n"):
        if line[:1] in (" ", "\t"):
            if key:
                fields[key] += "\n" + line[1:]
            continue
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def parse_stanza(stanza: str, uri: str = "") -> Package:
    """A Package from its Packages stanza. Raises PackageError for one that cannot be read."""
    f = _fields(stanza)
    try:
        deps = parse_relations(f.get("Pre-Depends", "")) + parse_relations(f.get("Depends", ""))
        provides = [alts[0] for alts in parse_relations(f.get("Provides", ""))]
        return Package(f["Package"], f["Version"], f.get("Architecture", ""), f["Filename"], f["SHA256"],
                       int(f.get("Size", "0")), tuple(tuple(a) for a in deps), tuple(provides),
                       f.get("Essential", "") == "yes", f.get("Priority", ""), f.get("Multi-Arch", ""), uri)
    except (KeyError, ValueError) as exc:
        raise PackageError(f"the Packages stanza of {f.get('Package', '?')} cannot be read ({exc}); the index is "
                           "corrupt: try another mirror") from None


@dataclass
class PackageIndex:
    """Every package of a release for one architecture (and ``all``), from all its suites."""

    architecture: str
    _stanzas: list[tuple[bytes, str]] = field(default_factory=list)  # (stanza, repository uri)
    _by_name: dict[bytes, list[int]] = field(default_factory=dict)
    _provided: dict[bytes, list[int]] = field(default_factory=dict)
    _parsed: dict[int, Package] = field(default_factory=dict)

    def add(self, data: bytes, uri: str) -> None:
        """Index one Packages file's stanzas (nothing parsed yet).

        Bytes, not text: the index holds UTF-8 descriptions, and one such character makes
        Python's string of the whole 50 MB index four bytes a character and every scan slower.
        """
        for stanza in data.split(b"\n\n"):
            if not stanza.startswith(b"Package: "):
                stanza = stanza.lstrip(b"\n")
                if not stanza.startswith(b"Package: "):
                    continue
            i = len(self._stanzas)
            self._stanzas.append((stanza, uri))
            self._by_name.setdefault(stanza[9:stanza.find(b"\n")].strip(), []).append(i)
            p = stanza.find(b"\nProvides: ")
            if p >= 0:
                end = stanza.find(b"\n", p + 1)
                for item in stanza[p + 11:end if end >= 0 else None].split(b","):
                    name = item.split(b"(", 1)[0].split(b":", 1)[0].strip()
                    if name:
                        self._provided.setdefault(name, []).append(i)

    def _get(self, i: int) -> Package:
        pkg = self._parsed.get(i)
        if pkg is None:
            stanza, uri = self._stanzas[i]
            pkg = self._parsed[i] = parse_stanza(stanza.decode("utf-8", "replace"), uri)
        return pkg

    def versions(self, name: str) -> list[Package]:
        """The real packages called ``name``, newest first (one per version: the first suite's copy)."""
        seen: dict[str, Package] = {}
        for i in self._by_name.get(name.encode(), ()):
            pkg = self._get(i)
            if pkg.architecture in (self.architecture, "all"):
                seen.setdefault(pkg.version, pkg)
        return sorted(seen.values(), key=_newest_first)

    def providers(self, name: str) -> list[Package]:
        """The packages whose ``Provides`` names ``name``: by priority (required first), name, newest first."""
        out: dict[tuple[str, str], Package] = {}
        for i in self._provided.get(name.encode(), ()):
            pkg = self._get(i)
            if pkg.architecture in (self.architecture, "all") and any(p.name == name for p in pkg.provides):
                out.setdefault((pkg.name, pkg.version), pkg)
        return sorted(out.values(), key=lambda p: (_PRIORITY.get(p.priority, len(_PRIORITY)), p.name, _newest_first(p)))

    def essential(self) -> list[str]:
        """The names of the release's ``Essential: yes`` packages, sorted."""
        names = set()
        for name, ids in self._by_name.items():
            for i in ids:
                if b"\nEssential: yes" in self._stanzas[i][0]:
                    names.add(name.decode())
        return sorted(names)


#: apt's preference among the providers of a virtual package: the more basic first (``awk``: mawk, not gawk)
_PRIORITY = {"required": 0, "important": 1, "standard": 2, "optional": 3, "extra": 4}


class _Newest:
    def __init__(self, version: str) -> None:
        self.version = version

    def __lt__(self, other: "_Newest") -> bool:
        return compare_versions(self.version, other.version) > 0


def _newest_first(pkg: Package) -> _Newest:
    return _Newest(pkg.version)


def _read(path: Path, fmt: str) -> bytes:
    data = path.read_bytes()
    if fmt == ".gz":
        from isal import igzip

        data = igzip.decompress(data)
    elif fmt == ".xz":
        import lzma

        data = lzma.decompress(data)
    return data


def load_indexes(fetcher: Fetcher, releases: list[Release], architecture: str) -> PackageIndex:
    """The index of ``architecture`` over ``releases`` (their ``main`` and other listed components).

    Each Packages file is the one the signed Release names, checked against its SHA256.
    Raises PackageError when a Release lists no index for the architecture, or a file does not match.
    """
    index = PackageIndex(architecture)
    for release in releases:
        repo = release.repository
        found = False
        for component in repo.components:
            base = f"{component}/binary-{architecture}/Packages"
            fmt = next((f for f in _FORMATS if base + f in release.files), None)
            if fmt is None:
                continue
            sha, size = release.files[base + fmt]
            path = fetcher.blob(release.index_url(base + fmt), sha, size, f"{repo.suite} {base}{fmt}")
            index.add(_read(path, fmt), repo.uri)
            found = True
        if not found and repo.suite == release.repository.suite.split("-", 1)[0]:
            raise PackageError(f"{repo.dists('InRelease')} lists no Packages index for {architecture} in "
                               f"{', '.join(repo.components)}: the release has no {architecture} packages there")
    return index
