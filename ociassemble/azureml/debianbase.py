"""The default bases: Debian with python3, nginx and runit, made from the release's .debs
(``debsbase``: no root, no mmdebstrap, no qemu) or, with ``with_mmdebstrap``, by mmdebstrap
(its maintainer scripts run), from this machine's own apt sources, and kept in the cache,
one per Python a Debian release carries (3.9 bullseye, 3.11 bookworm, the default, 3.13
trixie) and architecture.

No mirror is named anywhere: both engines read the machine's apt sources, so the
build uses whatever mirror or proxy the machine is set up for. For another release
than the machine's own, the same sources are given with that release's suites
(``bookworm`` → ``bullseye``, ``bookworm-security`` → ``bullseye-security``, …).

The choice is one chain of plain functions, whatever the engine: a Python version → its
Debian release (``release_for``) → the default base's folder (``default_base_path``).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..emulation import BINFMT, ensure_emulation, needs_emulation
from ..errors import BuildError, InputError
from ..image.cache import BlobCache
from ..image.oci import Platform
from ..image.platform import host_platform, normalize, short_name
from ..inputs.base import load_base
from ..transport.layout import write_layout

__all__ = ["DebianRelease", "RELEASES", "DEFAULT_PYTHON", "default_base_path", "make_base", "make_base_command",
           "debs_packages", "release_for", "require_default_bases", "sources_for", "PACKAGES", "SUITE"]


@dataclass(frozen=True)
class DebianRelease:
    """A Debian release a default base is made from, and the Python 3 its ``python3`` is."""

    suite: str  # "bookworm"
    python: str  # "3.11"
    packages: tuple[str, ...]
    #: apt components this release does not have (dropped from the machine's sources)
    no_components: tuple[str, ...] = ()


#: The Pythons a default base can have, each from the one Debian release that carries it.
#: trixie's nginx is the light build (its nginx-light is a transitional package).
RELEASES: dict[str, DebianRelease] = {
    "3.9": DebianRelease("bullseye", "3.9", ("python3", "nginx-light", "runit", "ca-certificates"),
                         no_components=("non-free-firmware",)),
    "3.11": DebianRelease("bookworm", "3.11", ("python3", "nginx-light", "runit", "ca-certificates")),
    "3.13": DebianRelease("trixie", "3.13", ("python3", "nginx", "runit", "ca-certificates")),
}
#: The default base's Python when nothing pins one
DEFAULT_PYTHON = "3.11"
SUITE = RELEASES[DEFAULT_PYTHON].suite
PACKAGES = RELEASES[DEFAULT_PYTHON].packages
_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
#: OCI architecture → Debian's name for it, where they differ
_DEB_ARCH = {"arm": "armhf", "386": "i386", "loong64": "loong64"}


def release_for(python: str | None = None) -> DebianRelease:
    """The Debian release whose python3 is ``python`` ("3.9"; None: the default, 3.11).

    Raises InputError naming the Pythons there are, for one no release carries.
    """
    release = RELEASES.get(python or DEFAULT_PYTHON)
    if release is None:
        raise InputError(f"no default base has Python {python}: the default bases have "
                         f"{', '.join(f'{v} (Debian {r.suite})' for v, r in RELEASES.items())}; "
                         f"choose one of these, or pass --base an image with Python {python}")
    return release


def default_base_path(cache: BlobCache, platform: Platform | None = None, python: str | None = None) -> Path:
    """The default base's layout for ``platform`` (default: this machine's) and ``python``
    (default: 3.11): one per release and architecture, so a cache holds the bases of every
    platform and Python a build asks for (``bookworm-azureml-amd64``, ``bullseye-azureml-arm64``)."""
    arch = short_name(platform or host_platform()).split("/", 1)[1].replace("/", "-")
    return cache.root / "bases" / f"{release_for(python).suite}-azureml-{arch}"


def make_base_command(python: str | None = None, platforms: Sequence[Platform] = ()) -> str:
    """The ``make-base`` command that makes these default bases."""
    names = ",".join(short_name(p) for p in platforms)
    return ("ociassemble make-base" + (f" --python {python}" if python and python != DEFAULT_PYTHON else "")
            + (f" --platform {names}" if names else ""))


def require_default_bases(cache: BlobCache, platforms: Sequence[Platform | None], python: str | None = None) -> None:
    """InputError naming every platform whose default base (for ``python``, default 3.11) is
    not made yet (None: this machine's), with the one ``make-base`` command that makes them all."""
    missing = [p for p in platforms if not (default_base_path(cache, p, python) / "index.json").is_file()]
    if not missing:
        return
    named = [p for p in missing if p is not None]
    names = ",".join(short_name(p) for p in named)
    release = release_for(python)
    raise InputError(f"no base image{' for ' + names if named else ''} with Python {release.python}: run "
                     f"'{make_base_command(python, named)}' once (Debian {release.suite} with python3, nginx, "
                     "runit), or pass --base")


def sources_for(text: str, release: DebianRelease) -> str:
    """The machine's apt sources (deb822 or one-line) with every suite turned into ``release``'s:
    ``bookworm`` → ``bullseye``, ``bookworm-updates`` → ``bullseye-updates``, ``bookworm-security``
    → ``bullseye-security`` (the same mirrors carry them), and components the release does not
    have dropped (bullseye has no ``non-free-firmware``)."""

    def suite(word: str) -> str:
        name, dash, rest = word.partition("-")
        return release.suite + dash + rest if name else word

    def components(words: list[str]) -> list[str]:
        return [w for w in words if w not in release.no_components]

    out = []
    for line in text.splitlines():
        m = re.match(r"^(\s*Suites:\s*)(.*)$", line, re.I)
        c = re.match(r"^(\s*Components:\s*)(.*)$", line, re.I)
        one = re.match(r"^(\s*deb(?:-src)?\s+(?:\[[^\]]*\]\s+)?\S+\s+)(\S+)(.*)$", line)
        if m:
            line = m.group(1) + " ".join(suite(w) for w in m.group(2).split())
        elif c:
            line = c.group(1) + " ".join(components(c.group(2).split()))
        elif one:
            line = one.group(1) + suite(one.group(2)) + " " + " ".join(components(one.group(3).split()))
        out.append(line)
    return "\n".join(out) + "\n"


def _mmdebstrap_reason(stderr: str) -> str:
    """mmdebstrap's first real error, not its closing "failed to run": a package the mirror does
    not serve (404) is named with how many more there are."""
    lines = [l.strip() for l in stderr.splitlines() if l.strip()]
    fetch = [l for l in lines if l.startswith("E: Failed to fetch ")]
    if fetch:
        m = re.match(r"E: Failed to fetch (\S+)\s+(.*?)(?:\s*\[IP:.*)?$", fetch[0])
        what = f"{m.group(1).rsplit('/', 1)[-1]} ({' '.join(m.group(2).split())})" if m else fetch[0][3:]
        more = f" and {len(fetch) - 1} more packages" if len(fetch) > 1 else ""
        return f"the apt mirror did not serve {what}{more} (check that it carries this release for this architecture)"
    errors = [l for l in lines if l.startswith("E: ") and "failed to run" not in l and "apt download failed" not in l]
    return (errors or lines or ["(no output)"])[0 if errors else -1]


def make_base(cache: BlobCache, *, force: bool = False, log: Callable[[str], None] = lambda _: None,
              platform: Platform | None = None, binfmt: Path = BINFMT, python: str | None = None,
              with_mmdebstrap: bool = False, apt_mirror: str | None = None, keyring: Path | None = None,
              epoch: int = 0) -> Path:
    """Build (once) the default base for ``platform`` (default: this machine's) and ``python``
    (default: 3.11; ``release_for``) as an OCI layout in the cache and return its path.

    It is made from the release's .debs by ``debsbase.make_base_from_debs`` (no mmdebstrap,
    no root, no qemu, for any architecture); ``apt_mirror`` and ``keyring`` are its mirror
    and keyring (default: this machine's apt sources and Debian's keyring).

    ``with_mmdebstrap``: made by mmdebstrap instead (root; its maintainer scripts run).
    Another architecture's base is then made by ``mmdebstrap --arch``, whose package scripts
    run under qemu user emulation (``emulation.ensure_emulation``: BuildError saying what to
    install or mount when this machine cannot; ``binfmt``: where binfmt_misc is mounted,
    another folder in tests).

    ``log`` hears each step (the library prints nothing; ``make-base`` passes its output's log).
    ``epoch``: every timestamp in the base (``Settings.epoch``: ``$SOURCE_DATE_EPOCH``, default 0;
    mmdebstrap is given it as its ``SOURCE_DATE_EPOCH``).
    """
    plat = normalize(platform or host_platform())
    release = release_for(python)
    target = default_base_path(cache, plat, python)
    if (target / "index.json").is_file() and not force:
        return target
    if not with_mmdebstrap:
        from .debsbase import make_base_from_debs

        # a second build (or test run) asking meanwhile waits for the first's lock, then takes its base
        return make_base_from_debs(cache, target, release=release.suite, platform=plat,
                                   packages=debs_packages(release), apt_mirror=apt_mirror, keyring=keyring, log=log,
                                   replace=force, epoch=epoch)
    target.parent.mkdir(parents=True, exist_ok=True)
    # one mmdebstrap per base at a time: a second build (or test run) waits, then takes the first's
    with open(target.parent / f".{target.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "index.json").is_file() and not force:
            return target
        return _make_base(cache, plat, release, target, log, binfmt, epoch)


def debs_packages(release: DebianRelease) -> tuple[str, ...]:
    """What a base made from .debs installs beyond the release's essential set: the release's
    packages, ``usr-is-merged`` (the layer is laid out merged-/usr; bullseye has no such package
    and ``make_base_from_debs`` drops it there) and ``libstdc++6`` (the C++ runtime manylinux
    wheels such as numpy's load from the system, which mmdebstrap's minbase has through apt)."""
    return ("usr-is-merged", *release.packages, "libstdc++6")


def _make_base(cache: BlobCache, plat: Platform, release: DebianRelease, target: Path, log: Callable[[str], None],
               binfmt: Path, epoch: int) -> Path:
    if shutil.which("mmdebstrap") is None:
        raise BuildError("mmdebstrap is not installed: run 'apt-get install mmdebstrap', or pass --base with an image that has python3, nginx and runit")
    sources = next((s for s in _SOURCES if s.is_file() and s.stat().st_size), None)
    if sources is None:
        raise BuildError("no apt sources found in /etc/apt: mmdebstrap needs this machine's Debian sources; or pass --base")
    foreign = needs_emulation(plat.architecture)
    if foreign:
        ensure_emulation(plat.architecture, what=f"make-base --platform {plat}", binfmt=binfmt, log=log)
    tarball = cache.tmp_dir / f"{release.suite}-{plat.architecture}-base-{os.getpid()}.tar"
    cmd = ["mmdebstrap", "--variant=minbase", f"--arch={_DEB_ARCH.get(plat.architecture, plat.architecture)}",
           f"--include={','.join(release.packages)}", release.suite, str(tarball), "-"]
    log(f"making the {release.suite} {plat} base (Python {release.python}) with mmdebstrap ("
        + ("about 3 minutes: its package scripts run under qemu" if foreign else "about a minute") + ")")
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}  # mmdebstrap's environment: this one's, dated
    try:
        proc = subprocess.run(cmd, input=sources_for(sources.read_text(), release), capture_output=True, text=True,
                              env=env)
        if proc.returncode != 0:
            raise BuildError(f"mmdebstrap {release.suite} --arch={cmd[2].split('=')[1]} failed: "
                             f"{_mmdebstrap_reason(proc.stderr)}; it needs root and this machine's apt sources"
                             + (" (and qemu-user-static for another architecture)" if foreign else ""))
        image = load_base(f"rootfs:{tarball}", cache, platform=plat)
        write_layout(image, cache, target, "latest")
    finally:
        tarball.unlink(missing_ok=True)
    return target
