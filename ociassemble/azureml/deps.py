"""The image's Python dependencies, resolved by pex for the image's Python and platform.

pex runs with a *complete platform* made from the base's Python version, glibc and
architecture, so only wheels that run in the image are chosen, whatever the build
machine is. The result is a flat site-packages directory (pex ``--layout flat``),
cached by what decides it (requirements, platform, pex version), which becomes the
deps layer at ``DEPS_DIR`` and is found through ``PYTHONPATH``.

What decides the deps (``deps_key``) is hashed here and nowhere else (``DepsKey``): into the
folder pex's output is kept in, and into the deps layer's key, which the local layer index
and the registry layer cache both use. A folder's marker file (``.complete``), written last,
holds a token naming that resolution; only this module reads or writes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from packaging import tags

from ..atomicfile import write_atomic
from ..errors import BuildError
from ..image.cache import BlobCache
from ..image.compress import Compression
from ..image.layer import LAYER_FORMAT
from ..image.oci import canonical_json
from .baseinfo import BaseInfo
from .indexes import IndexConfig, redact, strip_credentials
from .lockfile import Distribution, PlatformLock
from .pipconfig import for_pex

__all__ = ["DEPS_DIR", "DepsKey", "ResolvedDeps", "complete_platform", "deps_cached", "deps_key", "lock_deps",
           "requirements_file", "resolve_deps"]

DEPS_DIR = "/var/azureml-deps"
#: manylinux_2_17 is manylinux2014's glibc; a base with an unknown glibc is assumed
#: that old, so chosen wheels run on any glibc Linux.
_MIN_GLIBC = (2, 17)
#: pip's backtracking resolver: the legacy one (pex's default with its vendored pip) takes the
#: newest version of a shared dependency and then fails (azureml-core and python-dateutil 4)
RESOLVER_ARGS = ("--resolver-version", "pip-2020-resolver")
#: a deps folder's marker, written last (its presence: the folder is complete); it holds the folder's token
_MARKER = ".complete"
#: what a marker held before markers held tokens
_OLD_MARKER = "ok"


@dataclass(frozen=True)
class DepsKey:
    """What decides the resolved deps (``deps_key``'s document), and the one place it is hashed.

    Each hash keeps the bytes earlier versions wrote, so their caches still hit: the folder name
    is the sorted JSON's sha256 (``json.dumps``' spacing) cut to 32 hex digits; the layer key
    hashes ``canonical_json``.
    """

    inputs: Mapping[str, object]

    def folder(self, cache: BlobCache) -> Path:
        """Where ``resolve_deps`` keeps the folder these inputs give."""
        digest = hashlib.sha256(json.dumps(dict(self.inputs), sort_keys=True).encode()).hexdigest()
        return cache.root / "deps" / digest[:32]

    def layer_key(self, compression: Compression, epoch: int, token: str | None = None) -> str:
        """The deps layer's key (sha256 hex) for these inputs, compressed as asked, at ``epoch``.

        Without ``token``: the registry layer cache's key (``oa-deps-<key>``), the same on every
        runner. With the folder's ``token`` (``ResolvedDeps.token``): the local layer index's, so
        a folder resolved again (pex may pick other versions of unpinned requirements) never
        reuses the layer of the one it replaced.
        """
        doc: dict[str, object] = {"deps": dict(self.inputs), "compression": [compression.codec, compression.level],
                                  "epoch": epoch, "format": LAYER_FORMAT}
        if token is not None:
            doc.update(token=token, dest=DEPS_DIR)
        return hashlib.sha256(canonical_json(doc)).hexdigest()


@dataclass(frozen=True)
class ResolvedDeps:
    """A complete deps folder: its flat site-packages, its token, and whether this call ran pex."""

    site: Path
    #: names this resolution (None: its marker cannot be read; its layer is then not indexed)
    token: str | None
    pex_ran: bool


def complete_platform(info: BaseInfo) -> dict[str, object]:
    """pex's --complete-platform document for the image (marker environment + wheel tags)."""
    major, minor = (int(x) for x in info.python.split("."))
    glibc = tuple(int(x) for x in info.glibc.split(".")) if info.glibc else _MIN_GLIBC
    arch = info.machine
    platforms = [f"manylinux_{glibc[0]}_{m}_{arch}" for m in range(glibc[1], 16, -1)]
    legacy = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}
    platforms += [f"{name}_{arch}" for (g, name) in ((k, v) for k, v in legacy.items()) if g <= glibc]
    platforms.append(f"linux_{arch}")
    interp = f"cp{major}{minor}"
    compatible = [str(t) for t in tags.cpython_tags((major, minor), abis=[interp, "abi3", "none"], platforms=platforms)]
    compatible += [str(t) for t in tags.compatible_tags((major, minor), interp, platforms)]
    return {
        "marker_environment": {
            "implementation_name": "cpython",
            "implementation_version": info.python_full,
            "os_name": "posix",
            "platform_machine": arch,
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_system": "Linux",
            "platform_version": "",
            "python_full_version": info.python_full,
            "python_version": info.python,
            "sys_platform": "linux",
        },
        "compatible_tags": compatible,
    }


def _summarise_pex_error(stderr: str) -> str:
    """pex's (or its pip's) own explanation in one line: the requirement and what stands against it."""
    lines = [re.sub(r"^pip:\s*(ERROR:\s*)?", "", l).strip() for l in stderr.splitlines()]
    lines = [l for l in lines if l]
    # a locked file that is not the file locked: "N. pkg V from URL" then "Expected sha256 hash of X ... hashed to Y"
    for i, l in enumerate(lines):
        m = re.search(r"Expected (\w+) hash of ([0-9a-f]+) when downloading (\S+) but hashed to ([0-9a-f]+)", l)
        if m:
            where = next((re.search(r"from (\S+)", x) for x in reversed(lines[:i]) if re.search(r" from \S+", x)), None)
            url = strip_credentials(where.group(1)) if where else m.group(3)
            return (f"{url.rsplit('/', 1)[-1]} ({url}) hashes to {m.group(1)}:{m.group(4)}, but the lock expects "
                    f"{m.group(1)}:{m.group(2)}: the file on the index changed since it was locked; find out why, "
                    "then 'ociassemble lock --upgrade' to take the index's file")
    # pip's resolver: "The conflict is caused by:" then one line per side
    for i, l in enumerate(lines):
        if l.startswith("The conflict is caused by"):
            sides = []
            for side in lines[i + 1:]:
                if side.startswith(("To fix", "Additionally")) or side.endswith(":"):
                    break
                sides.append(side.replace("The user requested", "you asked for"))
            if sides:
                return "; ".join(sides)
    # pex's own check of what was resolved: "X requires Y but 1 incompatible dist was resolved:" + the dist
    for i, l in enumerate(lines):
        m = re.match(r"(.+ requires .+?) but \d+ incompatible dists? (?:was|were) resolved:?", l)
        if m:
            dist = lines[i + 1] if i + 1 < len(lines) else ""
            others = sum(1 for x in lines[i + 1:] if " incompatible dist" in x)
            more = f" (and {others} more conflicts; --debug shows them)" if others else ""
            return f"{m.group(1)}, but {dist or 'another version'} was chosen{more}"
    vcs = _vcs_problem(lines)
    if vcs:
        return vcs
    for l in lines:
        m = re.search(r"Could not find a version that satisfies the requirement (\S+)", l)
        if m:
            listed = re.search(r"\(from versions: ([^)]*)\)", l)
            versions = [v.strip() for v in (listed.group(1) if listed else "").split(",") if v.strip() not in ("", "none")]
            # pip sees only the files for the image's platform: a project with no wheel for it looks
            # the same as no project at all
            known = (f" (newest available: {', '.join(versions[-5:])})" if versions else
                     " (no wheel of it for this platform, or no such project: check the name, and that it publishes "
                     "wheels for this architecture)")
            return f"nothing matches {m.group(1)}{known}"
    for l in lines:
        m = re.match(r"No pre-built wheel was available for (.+?)\.?$", l)
        if m:
            return (f"no wheel of {m.group(1)} is published for this platform, and pex builds a wheel from the "
                    "source distribution only for the build machine")
    for pattern in (r"No matching distribution found for \S+",
                    r"ResolutionImpossible.*", r"Cannot install .*"):
        for l in lines:
            m = re.search(pattern, l, re.I)
            if m:
                return m.group(0)
    for l in reversed(lines):
        if l.startswith("ERROR") or "error" in l.lower():
            return l[:300]
    return lines[-1][:300] if lines else "pex failed without a message"


def _vcs_problem(lines: list[str]) -> str | None:
    """A ``git+https://…`` requirement pip could not fetch: no ``git`` here, or its clone failed
    (pip then reports the project as "not found", which sends the user to the wrong fix)."""
    url = _first_match(r"Discarding ((?:git|hg|svn|bzr)\+\S+?)\.? Command", lines)
    tool = _first_match(r"Cannot find command '(\w+)'", lines)
    if tool is not None:
        where = url or _first_match(rf"{tool} clone -q (\S+)", lines) or f"a {tool}+ requirement"
        return (f"{where} is fetched with {tool}, which this machine does not have: install it (apt-get install "
                f"{tool}), or name a released package instead")
    if url is not None:
        return (f"cannot fetch {url}: the clone failed (check the URL, that this machine can reach it, and its "
                "credentials), or name a released package instead")
    return None


def _first_match(pattern: str, lines: list[str]) -> str | None:
    """The first group of ``pattern`` in the first line it is found in."""
    for line in lines:
        m = re.search(pattern, line)
        if m:
            return m.group(1)
    return None


def deps_key(requirement_files: list[Path], info: BaseInfo, extra_args: list[str] | None = None, *,
             indexes: IndexConfig | None = None, locked: PlatformLock | None = None) -> DepsKey:
    """What decides the resolved deps: the requirements' texts, the complete platform, pex's version, pex's args,
    and the package sources when they are not PyPI's alone (without credentials).

    With ``locked``, the locked set of files (names and sha256) replaces the requirements and
    sources: those files give the same layer from any index, so a locked project on a fresh
    runner finds the deps layer another runner made (registry layer cache).
    """
    import pex.version

    key: dict[str, object] = {"platform": complete_platform(info), "pex": pex.version.__version__,
                              "args": [*RESOLVER_ARGS, *(extra_args or [])]}
    if locked is not None:
        key["locked"] = locked.locked_set
        return DepsKey(key)
    key["reqs"] = [p.read_text() for p in requirement_files]
    if indexes is not None and indexes != IndexConfig():
        key["indexes"] = indexes.redacted()
    return DepsKey(key)


@contextmanager
def requirements_file(cache: BlobCache, text: str) -> Iterator[Path]:
    """``text`` (requirement lines) in a file of the cache's temp folder for pex, for the block's time."""
    fd, name = tempfile.mkstemp(dir=cache.tmp_dir, prefix="requirements-", suffix=".txt")
    os.close(fd)
    path = Path(name)
    try:
        path.write_text(text)
        yield path
    finally:
        path.unlink(missing_ok=True)


def deps_cached(cache: BlobCache, key: DepsKey) -> bool:
    """Whether ``resolve_deps`` would find these deps in the cache (and so not run pex)."""
    return (key.folder(cache) / _MARKER).is_file()


def _folder_token(folder: Path) -> str | None:
    """The token in a complete folder's marker (None: unreadable); a folder marked before
    markers held tokens is given one here (it never changes again)."""
    marker = folder / _MARKER
    try:
        token = marker.read_text().strip()
        if token == _OLD_MARKER:
            token = os.urandom(16).hex()
            write_atomic(marker, token)
    except OSError:
        return None
    return token


def _run_pex(cmd: list[str], indexes: IndexConfig | None, *, log: Callable[[str], None],
             debug: bool) -> subprocess.CompletedProcess[str]:
    """Run pex (``cmd`` plus the sources' flags); its output with credentials hidden."""
    secrets = indexes.secrets if indexes is not None else []
    env = {**os.environ, "PEX_VERBOSE": "0"}
    # pex's pip reads no index setting of pip's configuration files: ``indexes`` holds them (pipconfig)
    conf = for_pex()
    with tempfile.TemporaryDirectory(prefix="ociassemble-pipconf-") as private:  # 0700
        if conf is not None:
            env["PIP_CONFIG_FILE"] = os.path.join(private, "pip.conf")
            Path(env["PIP_CONFIG_FILE"]).write_text(conf)
        proc = subprocess.run([*cmd, *(indexes.pex_args() if indexes is not None else [])], capture_output=True,
                              text=True, env=env)
    proc.stderr = redact(proc.stderr, secrets)
    proc.stdout = redact(proc.stdout, secrets)
    if proc.returncode != 0 and debug:
        log("pex's output:\n" + proc.stderr.rstrip())
    return proc


def _where(info: BaseInfo) -> str:
    return f"cp{info.python.replace('.', '')} linux/{info.architecture}"


def lock_deps(cache: BlobCache, requirement_files: list[Path], info: BaseInfo, *, indexes: IndexConfig | None = None,
              constraints: list[str] | None = None, log: Callable[[str], None] = lambda _: None,
              source: str | None = None, debug: bool = False) -> tuple[tuple[Distribution, ...], dict[str, object]]:
    """The distributions pex chooses for the requirements on the image's platform, and pex's lock settings.

    ``pex3 lock create --style strict`` with the base's complete platform: exactly the one file
    per distribution that ``resolve_deps`` installs on that platform (a universal lock would list
    every file of each version, for platforms the image is not). ``constraints`` (``name==version``
    lines) keep versions of an earlier lock. Raises BuildError as ``resolve_deps`` does.
    """
    tmp = Path(tempfile.mkdtemp(dir=cache.tmp_dir, prefix="lock-"))
    try:
        plat_file = tmp / "platform.json"
        plat_file.write_text(json.dumps(complete_platform(info)))
        cmd = [sys.executable, "-m", "pex.cli", "lock", "create", "--style", "strict", "--complete-platform",
               str(plat_file), *RESOLVER_ARGS, "-o", str(tmp / "lock.json")]
        for r in requirement_files:
            cmd += ["-r", str(r)]
        if constraints:
            (tmp / "constraints.txt").write_text("".join(c + "\n" for c in constraints))
            cmd += ["--constraints", str(tmp / "constraints.txt")]
        log(f"locking Python dependencies for {_where(info)} with pex")
        proc = _run_pex(cmd, indexes, log=log, debug=debug)
        if proc.returncode != 0:
            names = source or ", ".join(p.name for p in requirement_files)
            raise BuildError(f"cannot lock the Python requirements ({names}) for Python {info.python} "
                             f"linux/{info.architecture}: {_summarise_pex_error(proc.stderr)}; fix the requirement "
                             "or pin a version that has a wheel for that platform (--debug shows pex's output)")
        doc = json.loads((tmp / "lock.json").read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    resolves = doc.pop("locked_resolves")
    if len(resolves) != 1:
        raise BuildError(f"pex locked {len(resolves)} resolves for one platform ({_where(info)}); this is a bug")
    # the versions kept from an earlier lock are how it was made, not what it is: left out, so a
    # re-lock that changes nothing writes the same file
    fields = {**doc, "constraints": [], "platform_tag": resolves[0].get("platform_tag"),
              "marker": resolves[0].get("marker")}
    dists = []
    for req in resolves[0]["locked_requirements"]:
        art = req["artifacts"][0]
        url = strip_credentials(art["url"])
        dists.append(Distribution(req["project_name"], req["version"], url.rsplit("/", 1)[-1], url,
                                  (indexes or IndexConfig()).index_of(url), art["hash"],
                                  tuple(req.get("requires_dists") or ()), req.get("requires_python")))
    return tuple(sorted(dists, key=lambda d: d.name)), fields


def resolve_deps(cache: BlobCache, requirement_files: list[Path], info: BaseInfo, *,
                 extra_args: list[str] | None = None, log: Callable[[str], None] = lambda _: None,
                 source: str | None = None, debug: bool = False, indexes: IndexConfig | None = None,
                 locked: PlatformLock | None = None) -> ResolvedDeps:
    """The installed requirements for the image (``ResolvedDeps.site``), resolved once per ``deps_key``.

    ``indexes``: where packages come from (default PyPI). ``locked``: install exactly that
    lock's files (pex ``--lock``: nothing resolved, each file's sha256 checked) instead of
    resolving ``requirement_files``.

    Raises BuildError with pex's reason in one line when the requirements cannot be
    resolved for the image's platform (e.g. a package with no wheel for it), or a locked
    file's hash differs; ``source`` names the user's file in it.  With ``debug``, pex's
    whole output (credentials hidden) is logged first.
    """
    platform = complete_platform(info)
    final = deps_key(requirement_files, info, extra_args, indexes=indexes, locked=locked).folder(cache)
    if (final / _MARKER).is_file():
        return ResolvedDeps(final / "site", _folder_token(final), pex_ran=False)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache.tmp_dir, prefix="deps-"))
    try:
        plat_file = tmp / "platform.json"
        plat_file.write_text(json.dumps(platform))
        cmd = [sys.executable, "-m", "pex.cli", "venv", "create", "--layout", "flat", "-d", str(tmp / "site"),
               "--complete-platform", str(plat_file), *RESOLVER_ARGS]
        if locked is not None:
            (tmp / "pex.lock").write_text(json.dumps(locked.pex_lock(), sort_keys=True))
            cmd += ["--lock", str(tmp / "pex.lock")]
            log(f"installing the {len(locked.distributions)} locked Python distributions for {_where(info)} with pex")
        else:
            for r in requirement_files:
                cmd += ["-r", str(r)]
            log(f"resolving Python dependencies for {_where(info)} with pex")
        cmd += extra_args or []
        proc = _run_pex(cmd, indexes, log=log, debug=debug)
        if proc.returncode != 0:
            names = "ociassemble.lock" if locked is not None else source or ", ".join(p.name for p in requirement_files)
            fix = ("; fix the requirement or pin a version that has a wheel for that platform" if locked is None else "")
            raise BuildError(f"cannot install the Python requirements ({names}) for Python {info.python} "
                             f"linux/{info.architecture}: {_summarise_pex_error(proc.stderr)}{fix} "
                             "(--debug shows pex's output)")
        (tmp / "pex.lock").unlink(missing_ok=True)
        # pex leaves helper scripts whose shebang is '#!python': harmless, kept for `python3 -m`-less tools
        # a token naming this resolution: the deps layer's local key (``DepsKey.layer_key``)
        # changes when the folder is made again (pex may pick other versions of unpinned requirements)
        token = os.urandom(16).hex()
        (tmp / _MARKER).write_text(token)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ResolvedDeps(final / "site", token, pex_ran=True)
