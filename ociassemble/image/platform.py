"""Which platform an image is for: parsing ``--platform``, this machine's, and picking one out of an index.

Platforms are written as Docker and the OCI spec write them, ``os/arch[/variant]``
(``linux/amd64``, ``linux/arm64``, ``linux/arm/v7``). The names ``uname -m`` prints
(``x86_64``, ``aarch64``) are accepted for the architecture, and ``arm64`` always
carries the variant ``v8``, as ``docker buildx`` and containerd record it, so that
two spellings of one platform give one index digest.
"""

from __future__ import annotations

import platform as _platform
from collections.abc import Iterable

from ..errors import InputError, UsageError
from .oci import Descriptor, Index, Platform

__all__ = ["ALL", "host_platform", "matches", "parse_platform", "parse_platforms", "pick_platform", "short_name"]

#: What ``--platform all`` means to a reader: every image of an index, not one of them.
ALL = "all"

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
         "riscv64": "riscv64", "i686": "386", "i386": "386", "x86-64": "amd64", "arm64": "arm64", "amd64": "amd64"}
#: The variant an architecture has when none is written (docker/containerd's normalisation).
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}
_KNOWN = ("amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64")
_EXAMPLE = "e.g. linux/amd64, linux/arm64 or linux/amd64,linux/arm64"


def normalize(p: Platform) -> Platform:
    """One spelling of a platform: ``aarch64`` → ``arm64/v8``, ``x86_64`` → ``amd64``."""
    arch = _ARCH.get(p.architecture, p.architecture)
    return Platform(p.os, arch, p.variant or _DEFAULT_VARIANT.get(arch))


def short_name(p: Platform) -> str:
    """``linux/arm64`` for arm64/v8 (the variant every arm64 image has), else ``str(p)``: how a
    platform is written for people (commands to run, file and folder names)."""
    p = normalize(p)
    return f"{p.os}/{p.architecture}" if p.architecture == "arm64" and p.variant == "v8" else str(p)


def host_platform() -> Platform:
    """This machine's platform (what an image must be for to run here without emulation)."""
    machine = _platform.machine()
    return normalize(Platform("linux", _ARCH.get(machine, machine)))


def parse_platform(text: str) -> Platform:
    """``linux/arm64`` (or ``arm64``, ``linux/aarch64``, ``linux/arm/v7``) as a ``Platform``.

    Raises UsageError naming the accepted forms.
    """
    parts = [p.strip() for p in text.strip().split("/")]
    if len(parts) == 1 and parts[0]:
        parts = ["linux", parts[0]]
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise UsageError(f"--platform {text!r}: write OS/ARCH[/VARIANT], {_EXAMPLE}")
    os_, arch = parts[0].lower(), _ARCH.get(parts[1].lower(), parts[1].lower())
    if os_ != "linux":
        raise UsageError(f"--platform {text!r}: only linux images can be built (the scoring image runs Linux); {_EXAMPLE}")
    if arch not in _KNOWN:
        raise UsageError(f"--platform {text!r}: unknown architecture {parts[1]!r}; one of {', '.join(_KNOWN)} ({_EXAMPLE})")
    return normalize(Platform(os_, arch, parts[2].lower() if len(parts) == 3 else None))


def parse_platforms(value: str | Iterable[str | Platform]) -> tuple[Platform, ...]:
    """A comma list (or a list of them, or of ``Platform``s) of platforms, in the order given, each once.

    The order is the order of the index's manifests, so it is part of the index digest.
    """
    items = [value] if isinstance(value, str) else list(value)
    out: list[Platform] = []
    for item in items:
        parsed = [normalize(item)] if isinstance(item, Platform) else \
            [parse_platform(part) for part in item.split(",") if part.strip()]
        for p in parsed:
            if p not in out:
                out.append(p)
    if not out:
        raise UsageError(f"--platform: no platform given; {_EXAMPLE}")
    return tuple(out)


def matches(have: Platform | None, want: Platform) -> bool:
    """Whether an image for ``have`` serves ``want`` (a variant counts only where both name one)."""
    if have is None:
        return False
    h, w = normalize(have), normalize(want)
    return h.os == w.os and h.architecture == w.architecture and (
        not h.variant or not w.variant or h.variant == w.variant)


def pick_platform(index: Index, where: str, want: Platform | None = None) -> Descriptor:
    """The index entry for ``want`` (default: this machine's platform).

    An entry with no platform is taken only when it is the index's one image (an index
    written by a tool that leaves the field out). Raises InputError naming what it has.
    """
    want = want or host_platform()
    hits = [m for m in index.manifests if matches(m.platform, want)]
    exact = [m for m in hits if m.platform is not None and normalize(m.platform) == normalize(want)]
    if exact or hits:
        return (exact or hits)[0]
    unlabelled = [m for m in index.manifests if m.platform is None]
    if len(index.manifests) == 1 and unlabelled:
        return unlabelled[0]
    have = ", ".join(str(m.platform) for m in index.manifests if m.platform
                     and m.platform.architecture != "unknown") or "no platform"
    raise InputError(f"{where} has no image for {want}; it has {have} (pick one with --platform)")
