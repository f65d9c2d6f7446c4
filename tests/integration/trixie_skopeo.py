"""Debian trixie's skopeo, run on this bookworm machine: a containers/image that verifies sigstore.

Why: Debian bookworm's skopeo 1.9.3 and podman 4.3.1 are built with ``disable-sigstore.patch``
("Debian-local change: sigstore disabled"), so a ``sigstoreSigned`` policy refuses every image
there and acceptance of our signatures cannot be shown with them. Trixie's skopeo (1.18) has no
such patch but needs glibc 2.38. So, from the machine's own apt sources with the suite renamed
(no mirror is named here), in a private apt directory that leaves the host's apt state alone:
``apt-get download`` skopeo and the shared libraries its package depends on, ``dpkg-deb -x`` them
into one folder, and run skopeo with that folder's own dynamic loader (``ld.so --library-path``),
so none of the host's libraries is mixed in (checked with ``ld.so --list``).

Kept in the test cache (``trixie-skopeo/``), made once under a lock and renamed into place whole.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import test_cache_root

#: The Debian release whose skopeo verifies sigstore signatures (1.18.0, containers/image 5.34).
SUITE = "trixie"
PACKAGE = "skopeo"
#: What is kept: bump when the layout of the cached folder changes.
CACHE_NAME = f"{SUITE}-skopeo"
APT_TIMEOUT = 600  # seconds: the trixie Packages index is ~10 MB, the debs ~12 MB


class TrixieSkopeoError(RuntimeError):
    """Trixie's skopeo could not be obtained or does not run: the message says which step and why."""


@dataclass(frozen=True)
class ForeignSkopeo:
    """A skopeo extracted with its own libc: ``argv(...)`` is the command line that runs it."""

    root: Path
    loader: Path
    library_path: str
    version: str
    packages: tuple[str, ...]

    @property
    def binary(self) -> Path:
        return self.root / "usr" / "bin" / PACKAGE

    def argv(self, *args: str) -> list[str]:
        return [str(self.loader), "--library-path", self.library_path, str(self.binary), *args]


def _host_codename() -> str:
    text = Path("/etc/os-release").read_text()
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.M)
    if match is None:
        raise TrixieSkopeoError("/etc/os-release names no VERSION_CODENAME: not a Debian machine?")
    return match.group(1)


def _renamed_sources(codename: str) -> tuple[str, str]:
    """The machine's ``deb`` entries for its own release (``codename``, not -updates/-security),
    with the suite replaced by trixie: (one-line ``sources.list`` text, deb822 ``.sources`` text)."""
    apt = Path("/etc/apt")
    one_line: list[str] = []
    stanzas: list[str] = []
    lists = [apt / "sources.list"] if (apt / "sources.list").is_file() else []
    for path in [*lists, *sorted((apt / "sources.list.d").glob("*.list"))]:
        for line in path.read_text().splitlines():
            # deb [options] URI SUITE COMPONENT...
            match = re.match(r"^\s*deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)$", line)
            if match and match.group(3) == codename:
                one_line.append(f"deb {match.group(1) or ''}{match.group(2)} {SUITE} {match.group(4)}")
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = [l for l in stanza.splitlines() if l.strip() and not l.lstrip().startswith("#")]
            values = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].split() for l in fields if ":" in l}
            if ("deb" in values.get("types", []) and codename in values.get("suites", [])
                    and values.get("enabled", ["yes"]) != ["no"]):
                kept = [l for l in fields if l.split(":", 1)[0].strip().lower() not in ("types", "suites")]
                stanzas.append("\n".join(["Types: deb", f"Suites: {SUITE}", *kept]))
    if not one_line and not stanzas:
        raise TrixieSkopeoError(f"no 'deb' entry for {codename} in /etc/apt/sources.list(.d): cannot derive a {SUITE} "
                                f"source from the machine's apt sources")
    return "".join(l + "\n" for l in one_line), "\n\n".join(stanzas) + ("\n" if stanzas else "")


@dataclass(frozen=True)
class _PrivateApt:
    """apt-get/apt-cache with their lists, cache and sources in ``base``: the host's are not touched."""

    base: Path

    def options(self) -> list[str]:
        etc = self.base / "etc"
        opts = {"Dir::State": self.base / "state", "Dir::Cache": self.base / "cache",
                "Dir::State::status": "/dev/null",  # nothing is installed as far as this apt knows
                "Dir::Etc::sourcelist": etc / "sources.list", "Dir::Etc::sourceparts": etc / "sources.list.d",
                "Dir::Etc::preferences": "/dev/null", "Dir::Etc::preferencesparts": etc / "preferences.d"}
        if os.geteuid() == 0:
            opts["APT::Sandbox::User"] = "root"  # the private folders are not the _apt user's to read
        return [x for k, v in opts.items() for x in ("-o", f"{k}={v}")]

    def prepare(self, codename: str) -> None:
        one_line, deb822 = _renamed_sources(codename)
        for sub in ("state/lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/preferences.d"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "etc" / "sources.list").write_text(one_line)
        (self.base / "etc" / "sources.list.d" / f"{SUITE}.sources").write_text(deb822)

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        proc = subprocess.run([tool, *self.options(), *args], capture_output=True, text=True, cwd=cwd,
                              timeout=APT_TIMEOUT, env={**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"})
        if proc.returncode != 0 or "\nW: Failed to fetch" in proc.stderr or proc.stderr.startswith("E:"):
            last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["(no output)"]
            raise TrixieSkopeoError(f"{tool} {' '.join(args[:2])} for {SUITE} failed (exit {proc.returncode}): {last[0]}")
        return proc.stdout


def _library_closure(apt: _PrivateApt, package: str) -> list[str]:
    """``package`` and the shared-library packages (Debian names them ``lib*``) it depends on,
    transitively: the first of each set of alternatives, Depends and Pre-Depends only. Other
    dependencies (containers-common's config, gnupg's programs) are files skopeo reads only when
    not told otherwise: the tests pass ``--policy`` and ``--registries.d``."""
    seen = [package]
    todo = [package]
    while todo:
        out = apt.run("apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
                      "--no-replaces", "--no-enhances", *todo)
        todo = []
        after_alternative = False
        for line in out.splitlines():
            match = re.match(r"^\s*(\|?)(Depends|PreDepends):\s+(\S+)", line)
            if match is None:
                after_alternative = False
                continue
            name = match.group(3)
            if not after_alternative and name.startswith("lib") and name not in seen:
                seen.append(name)
                todo.append(name)
            after_alternative = match.group(1) == "|"
    return seen


def _loader(root: Path) -> tuple[Path, str]:
    """The extracted folder's dynamic loader and its library directories (this machine's arch)."""
    found = sorted(p for p in (root / "usr" / "lib").glob("*/ld-linux*.so*") if p.is_file() and not p.is_symlink())
    if not found:
        raise TrixieSkopeoError(f"no dynamic loader (ld-linux*.so*) in the extracted libc6 under {root}/usr/lib")
    triplet = found[0].parent.name
    dirs = [d for d in (root / "usr" / "lib" / triplet, root / "lib" / triplet) if d.is_dir()]
    return found[0], ":".join(str(d) for d in dirs)


def _check_runs(skopeo: ForeignSkopeo) -> str:
    """Every library skopeo loads comes from the extracted folder (none from the host); its version."""
    listed = subprocess.run([str(skopeo.loader), "--library-path", skopeo.library_path, "--list", str(skopeo.binary)],
                            capture_output=True, text=True, timeout=60)
    if listed.returncode != 0:
        raise TrixieSkopeoError(f"{SUITE} skopeo's libraries do not resolve: {listed.stderr.strip() or listed.stdout.strip()}")
    for line in listed.stdout.splitlines():
        if "not found" in line:
            raise TrixieSkopeoError(f"{SUITE} skopeo needs a library no downloaded package has: {line.strip()}")
        match = re.search(r"=>\s+(/\S+)", line)
        if match and not Path(match.group(1)).resolve().is_relative_to(skopeo.root.resolve()):
            raise TrixieSkopeoError(f"{SUITE} skopeo would load the host's {match.group(1)}: a library package is missing")
    version = subprocess.run(skopeo.argv("--version"), capture_output=True, text=True, timeout=60)
    if version.returncode != 0 or not version.stdout.startswith("skopeo version"):
        raise TrixieSkopeoError(f"{SUITE} skopeo does not run here: {version.stderr.strip() or version.stdout.strip()}")
    return version.stdout.split()[2]


def _load(folder: Path) -> ForeignSkopeo:
    root = folder / "root"
    loader, library_path = _loader(root)
    packages = tuple((folder / "packages.txt").read_text().split())
    skopeo = ForeignSkopeo(root=root, loader=loader, library_path=library_path, version="", packages=packages)
    return ForeignSkopeo(root=root, loader=loader, library_path=library_path, version=_check_runs(skopeo),
                         packages=packages)


def _make(dest: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix=f".{CACHE_NAME}-", dir=dest.parent))
    try:
        apt = _PrivateApt(work / "apt")
        apt.prepare(_host_codename())
        apt.run("apt-get", "update")
        packages = _library_closure(apt, PACKAGE)
        debs = work / "debs"
        debs.mkdir()
        apt.run("apt-get", "download", *packages, cwd=debs)
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "root")], check=True, capture_output=True, timeout=300)
        (work / "packages.txt").write_text("".join(f"{d.name}\n" for d in sorted(debs.glob("*.deb"))))
        shutil.rmtree(debs)
        shutil.rmtree(work / "apt")  # the lists (~50 MB unpacked) are not needed once the debs are out
        _load(work)  # it runs, with only its own libraries, before it is kept
        work.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def obtain_trixie_skopeo(cache_root: Path) -> ForeignSkopeo:
    """Trixie's skopeo under ``cache_root/trixie-skopeo`` (made on first use; raises
    ``TrixieSkopeoError`` with the failing step when it cannot be made or run)."""
    dest = cache_root / CACHE_NAME
    with open(cache_root / f"{CACHE_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be making it
        if not (dest / "packages.txt").is_file():
            shutil.rmtree(dest, ignore_errors=True)
            _make(dest)
        return _load(dest)


@pytest.fixture(scope="session")
def trixie_skopeo() -> ForeignSkopeo:
    """Trixie's skopeo from the machine's apt sources (~20 s once, then cached): fails, never
    skips, when it cannot be had, since the acceptance of our signatures rests on it."""
    try:
        return obtain_trixie_skopeo(test_cache_root())
    except (TrixieSkopeoError, OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"{SUITE}'s skopeo (a containers/image that verifies sigstore signatures) is not available: {exc}")
