"""Where a release's packages come from: the machine's own apt sources, or one mirror given.

No mirror is named in ociassemble: the machine's ``/etc/apt/sources.list.d/*.sources``
(deb822), ``*.list`` and ``/etc/apt/sources.list`` say which mirror or proxy to use, as
``make-base --with-mmdebstrap`` has always used them. Their suites are the machine's
release (``bookworm``, ``bookworm-updates``, ``bookworm-security``); another release is
fetched from the same mirrors with its own name put in (``trixie``, ``trixie-updates``,
``trixie-security``). ``apt_mirror`` (``--apt-mirror``) replaces them all with one
repository: its ``dists/<release>`` and ``main`` component only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

__all__ = ["Repository", "AptSource", "read_apt_sources", "repositories_for", "DEFAULT_KEYRINGS"]

#: The archive keyring of each distribution, as its keyring package installs it
#: (debian-archive-keyring, ubuntu-keyring): what InRelease files are checked against
#: when neither the apt source's ``Signed-By`` nor ``apt_keyring`` names another.
DEFAULT_KEYRINGS = {
    "debian": Path("/usr/share/keyrings/debian-archive-keyring.gpg"),
    "ubuntu": Path("/usr/share/keyrings/ubuntu-archive-keyring.gpg"),
}
_APT = Path("/etc/apt")


@dataclass(frozen=True)
class AptSource:
    """One ``deb`` line (or deb822 stanza) of the machine's apt sources."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: Path | None = None


@dataclass(frozen=True)
class Repository:
    """One suite of one mirror: ``<uri>/dists/<suite>/InRelease``, checked with ``keyring``."""

    uri: str
    suite: str
    components: tuple[str, ...]
    keyring: Path

    def url(self, path: str) -> str:
        return f"{self.uri.rstrip('/')}/{path.lstrip('/')}"

    def dists(self, path: str) -> str:
        return self.url(f"dists/{self.suite}/{path}")


def _deb822(text: str) -> list[AptSource]:
    out = []
    for para in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in para.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:
                fields[key] += "\n" + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        signed = fields.get("signed-by", "")
        for uri in fields.get("uris", "").split():
            out.append(AptSource(uri, tuple(fields.get("suites", "").split()), tuple(fields.get("components", "").split()),
                                 Path(signed) if signed.startswith("/") and "\n" not in signed else None))
    return out


def _one_line(text: str) -> list[AptSource]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        options = re.search(r"\[([^]]*)\]", line)
        signed = re.search(r"signed-by=(\S+)", options.group(1)) if options else None
        words = re.sub(r"\[[^]]*\]", "", line).split()
        if len(words) >= 3:
            out.append(AptSource(words[1], (words[2],), tuple(words[3:]), Path(signed.group(1)) if signed else None))
    return out


def read_apt_sources(apt_dir: Path = _APT) -> list[AptSource]:
    """The machine's ``deb`` sources over HTTP(S), in apt's reading order."""
    found: list[AptSource] = []
    main = apt_dir / "sources.list"
    if main.is_file():
        found += _one_line(main.read_text(errors="replace"))
    parts = apt_dir / "sources.list.d"
    for path in sorted(parts.glob("*")) if parts.is_dir() else []:
        if path.suffix == ".sources":
            found += _deb822(path.read_text(errors="replace"))
        elif path.suffix == ".list":
            found += _one_line(path.read_text(errors="replace"))
    return [s for s in found if s.uri.startswith(("http://", "https://"))]


def repositories_for(release: str, distro: str = "debian", *, apt_mirror: str | None = None,
                     keyring: Path | None = None, host_release: str | None = None,
                     apt_dir: Path = _APT) -> list[Repository]:
    """The repositories to fetch ``release`` (a codename: ``bookworm``) of ``distro`` from.

    ``apt_mirror``: that one (its ``main`` component). Otherwise the machine's sources
    whose suites are ``host_release`` (the machine's codename) or a suite of it
    (``-updates``, ``-security``), renamed for ``release``; only when ``distro`` is the
    machine's own. ``keyring``: check every InRelease with it (else the source's
    ``Signed-By``, else ``DEFAULT_KEYRINGS[distro]``).
    Raises InputError when there is nothing to fetch from.
    """
    default = keyring or DEFAULT_KEYRINGS.get(distro, DEFAULT_KEYRINGS["debian"])
    if apt_mirror:
        if not apt_mirror.startswith(("http://", "https://")):
            raise InputError(f"apt mirror {apt_mirror!r} is not an http:// or https:// URL; give the folder that "
                             "holds dists/ and pool/")
        return [Repository(apt_mirror, release, ("main",), default)]
    host_distro = _os_release_field("ID") or "debian"
    if host_distro != distro:
        raise InputError(f"the base is {distro} but this machine's apt sources are {host_distro}'s: give {distro}'s "
                         "mirror with --apt-mirror URL (or apt_mirror in the config)")
    sources = read_apt_sources(apt_dir)
    host = host_release or _host_codename(sources)
    out: list[Repository] = []
    for s in sources:
        for suite in s.suites:
            stem, sep, tail = suite.partition("-")
            if host is None or stem != host:
                continue
            name = release + (sep + tail)
            repo = Repository(s.uri, name, s.components or ("main",), keyring or s.signed_by or default)
            if repo not in out:
                out.append(repo)
    if not out:
        raise InputError(f"no apt source of this machine serves {distro} {release} (read /etc/apt/sources.list and "
                         "sources.list.d): give the mirror with --apt-mirror URL or apt_mirror in the config")
    return out


def _os_release_field(name: str) -> str | None:
    """A field of this machine's /etc/os-release, unquoted, or None."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return None
    m = re.search(rf"^{name}=\"?([^\"\n]*)\"?$", text, re.M)
    return m.group(1).strip().lower() if m else None


def _host_codename(sources: list[AptSource]) -> str | None:
    """The machine's release: VERSION_CODENAME of /etc/os-release, else its first source's suite."""
    codename = _os_release_field("VERSION_CODENAME")
    if codename:
        return codename
    return sources[0].suites[0].partition("-")[0] if sources and sources[0].suites else None
