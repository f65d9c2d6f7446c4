"""dpkg's database in an image: reading what a base has, and the records of packages added.

The packages added are recorded as dpkg would: a stanza each in
``/var/lib/dpkg/status`` (the control stanza with ``Status: install ok installed``
and its ``Conffiles``), and ``/var/lib/dpkg/info/<pkg>.list``, ``.md5sums`` and
``.conffiles``. The status file is the base's with the new stanzas added (a layer
replaces the file whole), sorted by package name, so ``dpkg-query --admindir``,
trivy, grype, syft and our SBOM all see every package, the base's and ours.
"""

from __future__ import annotations

import re

from .resolve import Installed

__all__ = ["installed_from_status", "merge_status", "status_stanza", "info_name"]


def _stanzas(text: str) -> list[str]:
    return [s.strip("\n") for s in re.split(r"\n\s*\n", text) if s.strip()]


def _field(stanza: str, name: str) -> str:
    m = re.search(rf"^{name}: ?(.*)$", stanza, re.M | re.I)
    return m.group(1).strip() if m else ""


def installed_from_status(*texts: str) -> Installed:
    """What the dpkg status texts (``status``, and distroless' ``status.d/*``) say is installed."""
    from .version import parse_relations

    versions: dict[str, str] = {}
    provides: dict[str, tuple[str, ...]] = {}
    for text in texts:
        for s in _stanzas(text):
            status = _field(s, "Status")
            if status and not status.endswith(" installed"):
                continue
            name, version = _field(s, "Package"), _field(s, "Version")
            if not name:
                continue
            versions[name] = version
            try:
                rels = parse_relations(_field(s, "Provides"))
            except ValueError:
                rels = []
            for alts in rels:
                provides[alts[0].name] = provides.get(alts[0].name, ()) + (alts[0].version if alts[0].op == "=" else "",)
    return Installed(versions, provides)


def status_stanza(control: str, conffiles: list[tuple[str, str]]) -> str:
    """A package's status stanza: its control stanza, ``Status`` second, ``Conffiles`` (path, md5) added."""
    lines = control.strip("\n").split("\n")
    out = [lines[0], "Status: install ok installed", *lines[1:]]
    if conffiles:
        out.append("Conffiles:")
        out += [f" {path} {md5}" for path, md5 in conffiles]
    return "\n".join(out)


def merge_status(base: str, added: list[str]) -> str:
    """The base's status text with ``added`` stanzas put in (replacing the same package), sorted."""
    def key(s: str) -> tuple[str, str]:
        return (_field(s, "Package"), _field(s, "Architecture"))

    merged = {key(s): s for s in _stanzas(base)}
    names = {key(s)[0] for s in added}
    merged = {k: s for k, s in merged.items() if k[0] not in names}
    for s in added:
        merged[key(s)] = s
    return "".join(merged[k] + "\n\n" for k in sorted(merged))


def info_name(package: str, architecture: str, multi_arch: str) -> str:
    """The name of a package's files in ``/var/lib/dpkg/info``: ``pkg:arch`` for Multi-Arch: same."""
    return f"{package}:{architecture}" if multi_arch == "same" else package
