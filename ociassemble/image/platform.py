"""Which platform an image is for, and picking it out of a multi-platform index."""

from __future__ import annotations

import platform as _platform

from ..errors import InputError
from .oci import Descriptor, Index, Platform

__all__ = ["host_platform", "pick_platform"]

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def host_platform() -> Platform:
    machine = _platform.machine()
    return Platform("linux", _ARCH.get(machine, machine), "v8" if machine == "aarch64" else None)


def pick_platform(index: Index, where: str, want: Platform | None = None) -> Descriptor:
    """The index entry for ``want`` (default: this machine's platform)."""
    want = want or host_platform()
    candidates = [m for m in index.manifests if m.platform is None or
                  (m.platform.os == want.os and m.platform.architecture == want.architecture)]
    if not candidates:
        have = ", ".join(str(m.platform) for m in index.manifests if m.platform)
        raise InputError(f"{where} has no image for {want}; it has {have}")
    return candidates[0]
