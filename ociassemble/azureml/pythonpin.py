"""The Python a project pins, and which default base (Debian release) it picks.

A pin comes from the conda file (``python=3.9``, ``python=3.9.12``, ``python>=3.8,<3.10``,
``python 3.9``) or from the project (``python = "3.9"`` in ociassemble.toml, ``--python``).
Only the minor version decides the base: Debian carries one Python 3 per release, so
``python=3.9.12`` is served by bullseye's 3.9 (the conda file's patch level is a build
detail conda would pick too). A range picks the default Python (3.11) when it allows it,
else the newest default base it allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from ..errors import InputError
from .debianbase import DEFAULT_PYTHON, RELEASES

__all__ = ["PythonPin", "parse_pin", "choose_python", "check_base_python"]

#: patch levels tried when asking whether a pin allows a minor version (3.X.0 … 3.X.39)
_PATCHES = range(40)


@dataclass(frozen=True)
class PythonPin:
    """A Python version constraint, as written and where."""

    spec: SpecifierSet
    text: str  # "python=3.9", as written
    where: str  # "env.yml", "--python", "ociassemble.toml"

    def allows(self, minor: str) -> bool:
        """Whether some 3.X.p release of ``minor`` ("3.9") satisfies the pin."""
        return any(self.spec.contains(Version(f"{minor}.{p}"), prereleases=True) for p in _PATCHES)

    def minors(self) -> list[str]:
        """The Python 3 minors (3.0 … 3.19) the pin allows, to name them in a message."""
        return [f"3.{m}" for m in range(20) if self.allows(f"3.{m}")]


def parse_pin(text: str, where: str) -> PythonPin:
    """A pin from a conda dependency (``python=3.9``, ``python>=3.8,<3.10``, ``python 3.9.*``)
    or a bare version (``3.9``). Raises InputError for text that is no version constraint."""
    raw = text.strip()
    body = re.sub(r"^python\s*", "", raw, flags=re.I).strip()
    body = body.split(" ")[0] if body[:1] in ("=", "<", ">", "!", "~") else body.replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)*(\.\*)?", body):  # "3.9", conda's "python 3.9"
        body = "=" + body
    if body.startswith("=") and not body.startswith("=="):  # conda's =3.9 (=3.9.12=build): that release line
        version = body[1:].split("=")[0]
        body = f"=={version}" if version.endswith(".*") or version.count(".") >= 2 else f"=={version}.*"
    try:
        spec = SpecifierSet(body)
    except InvalidSpecifier:
        raise InputError(f"{where}: python pin {raw!r} is not a version constraint; write e.g. python=3.9") from None
    return PythonPin(spec, raw, where)


def _nearest(minors: list[str]) -> str:
    """The default-base Pythons nearest to the pinned ones, for the message that refuses them."""
    wanted = [int(m.split(".")[1]) for m in minors] or [int(DEFAULT_PYTHON.split(".")[1])]
    have = sorted(int(v.split(".")[1]) for v in RELEASES)
    best = min(abs(h - w) for h in have for w in wanted)
    return " or ".join(f"python=3.{h}" for h in have if any(abs(h - w) == best for w in wanted))


def choose_python(project_pin: PythonPin | None, conda_pin: PythonPin | None) -> str:
    """The Python of the default base these pins pick ("3.9"; nothing pinned: 3.11).

    Raises InputError (one line) when the two pins disagree, or when no default base has
    a Python the pins allow (it suggests the nearest pin, or ``--base`` an image with it).
    """
    pins = [p for p in (project_pin, conda_pin) if p is not None]
    if not pins:
        return DEFAULT_PYTHON
    if len(pins) == 2 and not any(all(p.allows(f"3.{m}") for p in pins) for m in range(20)):
        raise InputError(f"{pins[0].where} asks for Python {pins[0].text} but {pins[1].where} pins {pins[1].text}: "
                         "make them agree")
    allowed = [v for v in RELEASES if all(p.allows(v) for p in pins)]
    if allowed:
        return DEFAULT_PYTHON if DEFAULT_PYTHON in allowed else max(allowed, key=lambda v: int(v.split(".")[1]))
    pin = pins[-1]
    minors = pin.minors()
    named = ", ".join(minors[:3]) + (" …" if len(minors) > 3 else "") if minors else "none"
    have = ", ".join(f"{v} (Debian {r.suite})" if i == 0 else f"{v} ({r.suite})" for i, (v, r) in enumerate(RELEASES.items()))
    said = f"{pin.where} {pin.text}" if pin.where.startswith("--") else f"{pin.where} pins {pin.text}"
    raise InputError(f"{said}: no default base has Python {named} (they have {have}); pin "
                     f"{_nearest(minors)} instead, or pass --base an image with Python {named}, nginx and runit")


def check_base_python(pins: list[PythonPin], base_python: str, base_spec: str) -> None:
    """InputError naming the pin and the base when a chosen base's Python is not the pinned one."""
    for pin in pins:
        if not pin.allows(base_python):
            raise InputError(f"{pin.where} pins {pin.text} but the base has Python {base_python} ({base_spec}); "
                             f"change the pin to python={base_python}, or use a base with the pinned Python"
                             + (f" ('ociassemble make-base --python {pin.minors()[0]}' makes one)"
                                if pin.minors() and pin.minors()[0] in RELEASES else ""))
