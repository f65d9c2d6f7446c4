"""Debian trixie's skopeo, podman and cosign, run on this bookworm machine: verifiers of sigstore signatures.

Why: Debian bookworm's skopeo 1.9.3 and podman 4.3.1 are built with ``disable-sigstore.patch``
("Debian-local change: sigstore disabled"), so a ``sigstoreSigned`` policy refuses every image
there and acceptance of our signatures cannot be shown with them. Trixie's skopeo 1.18 and
podman 5.4 have no such patch but need glibc 2.38+; trixie also has cosign 2.5 (bookworm has none). So, from the machine's own apt sources with
the suite renamed (no mirror is named here), in a private apt directory that leaves the host's
apt state alone: ``apt-get download`` the tool's packages and the shared libraries they depend
on, ``dpkg-deb -x`` them into one folder, and run the tool in a bubblewrap sandbox whose ``/usr``
is that folder (its own ``ld.so`` and libc; none of the host's libraries), with the host's
network, ``/tmp`` and the paths a test names.

Kept in the test cache (``trixie-skopeo/``, ``trixie-podman/``, ``trixie-cosign/``), made once under a lock and
renamed into place whole.
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

#: The Debian release whose skopeo and podman verify sigstore signatures, and that has cosign.
SUITE = "trixie"
#: The packages each tool needs besides its shared libraries, and their programs (run once with
#: --version before the folder is kept): podman checks at start that conmon runs and that
#: netavark and an OCI runtime (crun) are there, even for a pull.
TOOLS = {"skopeo": {"skopeo": "/usr/bin/skopeo"},
         "podman": {"podman": "/usr/bin/podman", "conmon": "/usr/bin/conmon", "crun": "/usr/bin/crun",
                    "netavark": "/usr/lib/podman/netavark"},
         "cosign": {"cosign": "/usr/bin/cosign"}}
#: How a program says its version when not with ``--version``.
VERSION_ARGS = {"cosign": ("version",)}
APT_TIMEOUT = 600  # seconds: the trixie Packages index is ~10 MB, podman's debs ~35 MB


class TrixieToolError(RuntimeError):
    """A trixie tool could not be obtained or does not run: the message says which step and why."""


@dataclass(frozen=True)
class ForeignTool:
    """A trixie program extracted with its libraries: ``argv(...)`` runs it in a sandbox whose
    ``/usr`` is ``root/usr``, with this machine's network, ``/tmp`` (read-write) and ``binds``."""

    name: str
    program: str
    root: Path
    version: str
    packages: tuple[str, ...]

    def argv(self, *args: str, binds: tuple[Path, ...] = (), env: dict[str, str] | None = None) -> list[str]:
        cmd = ["bwrap", "--die-with-parent", "--ro-bind", str(self.root / "usr"), "/usr"]
        for link in ("bin", "sbin", "lib", "lib64"):  # the merged-/usr links the loader path goes through
            cmd += ["--symlink", f"usr/{link}", f"/{link}"]
        cmd += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/var/tmp", "--dir", "/etc"]
        for path in ("/etc/passwd", "/etc/group"):
            cmd += ["--ro-bind", path, path]
        for path in sorted({Path(tempfile.gettempdir()), Path("/tmp"), *binds}):  # parents first
            cmd += ["--bind", str(path), str(path)]
        for key, value in (env or {}).items():
            cmd += ["--setenv", key, value]
        return [*cmd, self.program, *args]


def _host_codename() -> str:
    text = Path("/etc/os-release").read_text()
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.M)
    if match is None:
        raise TrixieToolError("/etc/os-release names no VERSION_CODENAME: not a Debian machine?")
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
        raise TrixieToolError(f"no 'deb' entry for {codename} in /etc/apt/sources.list(.d): cannot derive a {SUITE} "
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
        if proc.returncode != 0 or re.search(r"^(W: Failed to fetch|E:)", proc.stderr, re.M):
            last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["(no output)"]
            raise TrixieToolError(f"{tool} {' '.join(args[:2])} for {SUITE} failed (exit {proc.returncode}): {last[0]}")
        return proc.stdout


def _library_closure(apt: _PrivateApt, wanted: tuple[str, ...]) -> list[str]:
    """``wanted`` and the shared-library packages (Debian names them ``lib*``) they depend on,
    transitively: the first of each set of alternatives, Depends and Pre-Depends only. Other
    dependencies (containers-common's config, gnupg's programs) are files the tools read only when
    not told otherwise: the tests pass the policy and registries.d."""
    seen = list(wanted)
    todo = list(wanted)
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


def _load(folder: Path, name: str) -> ForeignTool:
    """The tool in ``folder``, once each of its programs has run (``--version``) in the sandbox:
    a missing library shows here, as the loader's own message."""
    packages = tuple((folder / "packages.txt").read_text().split())
    root = folder / "root"
    for package, program in TOOLS[name].items():
        version_args = VERSION_ARGS.get(package, ("--version",))
        proc = subprocess.run(ForeignTool(package, program, root, "", packages).argv(*version_args),
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise TrixieToolError(f"{SUITE}'s {program} does not run here: {(proc.stderr or proc.stdout).strip()}")
    [deb] = [d for d in packages if d.startswith(f"{name}_")]  # NAME_VERSION_ARCH.deb
    return ForeignTool(name=name, program=TOOLS[name][name], root=root, version=deb.split("_")[1].replace("%3a", ":"),
                       packages=packages)


def _make(dest: Path, name: str) -> None:
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        apt = _PrivateApt(work / "apt")
        apt.prepare(_host_codename())
        apt.run("apt-get", "update")
        packages = _library_closure(apt, tuple(TOOLS[name]))
        debs = work / "debs"
        debs.mkdir()
        apt.run("apt-get", "download", *packages, cwd=debs)
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "root")], check=True, capture_output=True, timeout=300)
        (work / "packages.txt").write_text("".join(f"{d.name}\n" for d in sorted(debs.glob("*.deb"))))
        shutil.rmtree(debs)
        shutil.rmtree(work / "apt")  # the lists (~50 MB unpacked) are not needed once the debs are out
        _load(work, name)  # it runs, with only its own libraries, before it is kept
        work.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _is_complete(folder: Path, name: str) -> bool:
    """``folder`` was made with every package ``TOOLS`` now names for ``name`` (a folder made
    before a package was added there is made again)."""
    listed = folder / "packages.txt"
    debs = listed.read_text().split() if listed.is_file() else []
    return all(any(deb.startswith(f"{package}_") for deb in debs) for package in TOOLS[name])


def obtain_trixie_tool(cache_root: Path, name: str) -> ForeignTool:
    """Trixie's ``name`` (a key of ``TOOLS``) under ``cache_root/trixie-NAME``, made on first use;
    raises ``TrixieToolError`` naming the failing step when it cannot be made or run."""
    dest = cache_root / f"{SUITE}-{name}"
    if shutil.which("bwrap") is None:
        raise TrixieToolError("bwrap is not installed (Debian: bubblewrap; scripts/setup installs it)")
    with open(cache_root / f"{SUITE}-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be making it
        if not _is_complete(dest, name):
            shutil.rmtree(dest, ignore_errors=True)
            _make(dest, name)
        return _load(dest, name)


def _fixture(name: str) -> ForeignTool:
    try:
        return obtain_trixie_tool(test_cache_root(), name)
    except (TrixieToolError, OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"{SUITE}'s {name} (a containers/image that verifies sigstore signatures) is not available: {exc}")


@pytest.fixture(scope="session")
def trixie_skopeo() -> ForeignTool:
    """Trixie's skopeo from the machine's apt sources (~20 s once, then cached): fails, never
    skips, when it cannot be had, since the acceptance of our signatures rests on it."""
    return _fixture("skopeo")


@pytest.fixture(scope="session")
def trixie_podman() -> ForeignTool:
    """Trixie's podman (with conmon, crun, netavark: ~35 MB of debs once, then cached), as
    ``trixie_skopeo``."""
    return _fixture("podman")


@pytest.fixture(scope="session")
def trixie_cosign() -> ForeignTool:
    """Trixie's cosign 2.5 (one static Go program, ~20 s once, then cached), as ``trixie_skopeo``."""
    return _fixture("cosign")
