"""The default base: a Debian bookworm minbase with python3, nginx-light and runit,
made by mmdebstrap from this machine's own apt sources and kept in the cache.

No mirror is named anywhere: mmdebstrap reads the machine's apt sources, so the
build uses whatever mirror or proxy the machine is set up for.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ..emulation import BINFMT, ensure_emulation, needs_emulation
from ..errors import BuildError, InputError
from ..image.cache import BlobCache
from ..image.oci import Platform
from ..image.platform import host_platform, normalize, short_name
from ..inputs.base import load_base
from ..transport.layout import write_layout

__all__ = ["default_base_path", "make_base", "require_default_bases", "PACKAGES", "SUITE"]

SUITE = "bookworm"
PACKAGES = ("python3", "nginx-light", "runit", "ca-certificates")
_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
#: OCI architecture → Debian's name for it, where they differ
_DEB_ARCH = {"arm": "armhf", "386": "i386", "loong64": "loong64"}


def default_base_path(cache: BlobCache, platform: Platform | None = None) -> Path:
    """The default base's layout for ``platform`` (default: this machine's): one per
    architecture, so a cache holds the bases of every platform a build asks for."""
    arch = short_name(platform or host_platform()).split("/", 1)[1].replace("/", "-")
    return cache.root / "bases" / f"{SUITE}-azureml-{arch}"


def require_default_bases(cache: BlobCache, platforms: Sequence[Platform | None]) -> None:
    """InputError naming every platform whose default base is not made yet (None: this
    machine's), with the one ``make-base`` command that makes them all."""
    missing = [p for p in platforms if not (default_base_path(cache, p) / "index.json").is_file()]
    if not missing:
        return
    named = [p for p in missing if p is not None]
    names = ",".join(short_name(p) for p in named)
    raise InputError(f"no base image{' for ' + names if named else ''}: run 'ociassemble make-base"
                     f"{' --platform ' + names if named else ''}' once (Debian bookworm with python3, nginx, "
                     "runit), or pass --base")


def make_base(cache: BlobCache, *, force: bool = False, log=print,  # type: ignore[no-untyped-def]
              platform: Platform | None = None, binfmt: Path = BINFMT, from_debs: bool = False,
              release: str = SUITE, apt_mirror: str | None = None, keyring: Path | None = None) -> Path:
    """Build (once) the default base for ``platform`` (default: this machine's) as an OCI
    layout in the cache and return its path.

    Another architecture's base is made by ``mmdebstrap --arch``, whose package scripts run
    under qemu user emulation (``emulation.ensure_emulation``: BuildError saying what to
    install or mount when this machine cannot; ``binfmt``: where binfmt_misc is mounted,
    another folder in tests).

    ``from_debs``: made from ``release``'s .debs by ``debsbase.make_base_from_debs`` instead
    (no mmdebstrap, no root, no qemu, for any architecture); ``apt_mirror`` and ``keyring``
    are its mirror and keyring (default: this machine's apt sources and Debian's keyring).
    """
    plat = normalize(platform or host_platform())
    target = default_base_path(cache, plat)
    if (target / "index.json").is_file() and not force:
        return target
    if from_debs:
        from .debsbase import make_base_from_debs

        return make_base_from_debs(cache, target, release=release, platform=plat, apt_mirror=apt_mirror,
                                   keyring=keyring, log=log)
    target.parent.mkdir(parents=True, exist_ok=True)
    # one mmdebstrap per base at a time: a second build (or test run) waits, then takes the first's
    with open(target.parent / f".{target.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "index.json").is_file() and not force:
            return target
        return _make_base(cache, plat, target, log, binfmt)


def _make_base(cache: BlobCache, plat: Platform, target: Path, log, binfmt: Path) -> Path:  # type: ignore[no-untyped-def]
    if shutil.which("mmdebstrap") is None:
        raise BuildError("mmdebstrap is not installed: run 'apt-get install mmdebstrap', or pass --base with an image that has python3, nginx and runit")
    sources = next((s for s in _SOURCES if s.is_file() and s.stat().st_size), None)
    if sources is None:
        raise BuildError("no apt sources found in /etc/apt: mmdebstrap needs this machine's Debian sources; or pass --base")
    foreign = needs_emulation(plat.architecture)
    if foreign:
        ensure_emulation(plat.architecture, what=f"make-base --platform {plat}", binfmt=binfmt, log=log)
    tarball = cache.tmp_dir / f"{SUITE}-{plat.architecture}-base-{os.getpid()}.tar"
    cmd = ["mmdebstrap", "--variant=minbase", f"--arch={_DEB_ARCH.get(plat.architecture, plat.architecture)}",
           f"--include={','.join(PACKAGES)}", SUITE, str(tarball), "-"]
    log(f"making the {SUITE} {plat} base with mmdebstrap ("
        + ("about 3 minutes: its package scripts run under qemu" if foreign else "about a minute") + ")")
    env = {**os.environ, "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "0")}
    try:
        with open(sources, "rb") as stdin:
            proc = subprocess.run(cmd, stdin=stdin, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise BuildError(f"mmdebstrap --arch={cmd[2].split('=')[1]} failed: {last}; it needs root and this "
                             "machine's apt sources" + (" (and qemu-user-static for another architecture)" if foreign else ""))
        image = load_base(f"rootfs:{tarball}", cache, platform=plat)
        write_layout(image, cache, target, "latest")
    finally:
        tarball.unlink(missing_ok=True)
    return target
