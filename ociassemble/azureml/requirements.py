"""One requirement set for the deps layer: the scoring server's pins merged with the user's.

pip and pex refuse a project named twice ("Double requirement given"), and Azure ML
environments name the server's own packages all the time (``inference-schema[numpy-support]``,
flask, gunicorn), so the two lists are merged by canonical project name: extras are
united, specifiers intersected, and the user's exact pin wins when the server is known
to work with it (``works with`` in ``layers/app-requirements.txt``).  Packages that only
exist to provide the serving stack the image already has (``azureml-defaults`` and the
like) are left out unless asked for: their pins fight the server's and they would
install a second server nobody runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from ..errors import BuildError

__all__ = ["SERVING_STACK", "AppPin", "Merged", "merge_requirements", "read_app_pins"]

#: Projects whose only job is the serving stack the image ships (gunicorn + the scoring app
#: with azureml.contrib.services and azureml.core.model.Model.get_model_path), and why.
SERVING_STACK: dict[str, str] = {
    "azureml-defaults": "the scoring server and its logging",
    "azureml-inference-server-http": "the scoring server",
    "azureml-contrib-services": "AMLRequest, AMLResponse and rawhttp",
}

_WORKS_WITH = re.compile(r"#\s*works with\s+(?P<spec>\S+)")


@dataclass(frozen=True)
class AppPin:
    """A package the scoring server needs: the version it ships and the versions it works with."""

    requirement: Requirement  # flask==3.1.3
    works_with: SpecifierSet  # >=3.1,<4

    @property
    def version(self) -> str:
        return next(iter(self.requirement.specifier)).version


@dataclass
class Merged:
    """The lines pex installs, and what the build says about how they were chosen."""

    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


def read_app_pins(path: Path, python: str = "3.11") -> dict[NormalizedName, AppPin]:
    """``layers/app-requirements.txt``: one ``name==version  # works with SPEC`` a line, for the
    image's ``python`` ("3.9"): a line with a marker (``; python_version < "3.10"``) counts only
    where the marker holds, and the pin is kept without it (one line per package)."""
    pins: dict[NormalizedName, AppPin] = {}
    environment = {"python_version": python, "python_full_version": f"{python}.0"}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        if req.marker is not None:
            if not req.marker.evaluate(environment):
                continue
            req.marker = None
        match = _WORKS_WITH.search(raw)
        works_with = SpecifierSet(match.group("spec")) if match else req.specifier
        pins[canonicalize_name(req.name)] = AppPin(req, works_with)
    return pins


def _format(name: str, extras: set[str], spec: SpecifierSet | str, marker: object = None) -> str:
    extra = f"[{','.join(sorted(extras))}]" if extras else ""
    return f"{name}{extra}{spec}" + (f"; {marker}" if marker else "")


def _exact_pins(spec: SpecifierSet) -> list[str]:
    return [s.version for s in spec if s.operator in ("==", "===") and not s.version.endswith(".*")]


def _contains(spec: SpecifierSet, version: str) -> bool:
    try:
        return spec.contains(Version(version), prereleases=True)
    except InvalidVersion:  # an '===' pin of no PEP 440 version: no range holds it
        return False


def _merge_with_app(pin: AppPin, user: list[Requirement], source: str) -> tuple[str, str | None]:
    """The one line for a package both sides name, and a note when the user's choice changed the server's."""
    name = pin.requirement.name
    extras = set(pin.requirement.extras).union(*(r.extras for r in user))
    shown = " and ".join(str(r) for r in user)
    urls = [r for r in user if r.url]
    if urls:
        return (_format(name, extras, f" @ {urls[0].url}"),
                f"{name}: {source}'s {urls[0].url} replaces the scoring server's {pin.requirement} "
                f"(it works with {name}{pin.works_with})")
    spec = SpecifierSet()
    for r in user:
        spec &= r.specifier
    if not spec or _contains(spec, pin.version):
        return _format(name, extras, f"=={pin.version}"), None
    fix = (f"pin a version in {pin.works_with}, or drop the pin to take {pin.version}"
           f" (the scoring server in /var/azureml-app needs {name})")
    exact = _exact_pins(spec)
    if exact:
        version = exact[0]
        if not _contains(pin.works_with, version) or not _contains(spec, version):
            raise BuildError(f"{source} asks for {shown}, but the scoring server needs {name}{pin.works_with} "
                             f"(it ships {pin.requirement}): {fix}")
        note = f"{name}=={version}: {source}'s pin replaces the scoring server's {pin.version}"
        return _format(name, extras, f"=={version}"), note
    merged = spec & pin.works_with
    note = f"{name}: {source}'s {spec} and the scoring server's {pin.works_with} give {name}{merged}"
    return _format(name, extras, merged), note


def _serving_stack_note(names: list[str]) -> str:
    why = "; ".join(f"{n}: {SERVING_STACK[canonicalize_name(n)]}" for n in names)
    they, provide = ("them", "they provide") if len(names) > 1 else ("it", "it provides")
    return (f"{', '.join(names)} not installed: the image already has what {provide} ({why}); "
            f"set install_serving_stack = true (or --install-serving-stack) if score.py imports from {they}")


def merge_requirements(app: dict[NormalizedName, AppPin], user_lines: list[str], *, source: str = "your environment",
                       install_serving_stack: bool = False) -> Merged:
    """The scoring server's pins and the user's requirement lines as one pip requirements list.

    Lines that are no plain requirement (pip options, paths, unparsable text) are passed on
    as they are, for pex to take or refuse.  ``source`` names the user's file in messages.

    Raises:
        BuildError: the user pins a version of a server package the server does not work with.
    """
    result = Merged()
    grouped: dict[NormalizedName, list[Requirement]] = {}
    order: list[tuple[str, str]] = []  # ("req", canonical name) or ("raw", the line as written)
    skipped: list[str] = []
    for line in user_lines:
        text = line.strip()
        if not text:
            continue
        try:
            req = Requirement(text)
        except InvalidRequirement:
            order.append(("raw", text))  # an option (--extra-index-url …), a path, or pex's to refuse
            continue
        key = canonicalize_name(req.name)
        if key in SERVING_STACK and not install_serving_stack:
            if req.name not in skipped:
                skipped.append(req.name)
            continue
        if key not in grouped:
            grouped[key] = []
            order.append(("req", key))
        grouped[key].append(req)
    if skipped:
        result.notes.append(_serving_stack_note(skipped))
    shared: list[str] = []
    for key, pin in app.items():
        if key in grouped:
            line, note = _merge_with_app(pin, grouped.pop(key), source)
            shared.append(line)
            if note:
                result.notes.append(note)
        else:
            line = str(pin.requirement)
        result.lines.append(line)
    if shared:
        result.notes.append(f"named by both {source} and the scoring server, installed once: {', '.join(shared)}")
    for kind, item in order:
        if kind == "raw":
            result.lines.append(item)
            continue
        if item not in grouped:  # merged into a server pin above
            continue
        reqs = grouped[NormalizedName(item)]
        if len(reqs) == 1 or len({str(r.marker) for r in reqs}) > 1 or any(r.url for r in reqs):
            result.lines.extend(str(r) for r in reqs)  # pex says whether two markers or URLs agree
            continue
        spec = SpecifierSet()
        for r in reqs:
            spec &= r.specifier
        result.lines.append(_format(reqs[0].name, set().union(*(r.extras for r in reqs)), spec, reqs[0].marker))
    return result

