"""The image's Python dependencies, resolved by pex for the image's Python and platform.

pex runs with a *complete platform* made from the base's Python version, glibc and
architecture, so only wheels that run in the image are chosen, whatever the build
machine is. The result is a flat site-packages directory (pex ``--layout flat``),
cached by what decides it (requirements, platform, pex version), which becomes the
deps layer at ``DEPS_DIR`` and is found through ``PYTHONPATH``.
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
from pathlib import Path

from packaging import tags

from ..errors import BuildError
from ..image.cache import BlobCache
from .baseinfo import BaseInfo

__all__ = ["DEPS_DIR", "complete_platform", "deps_cached", "deps_key", "resolve_deps"]

DEPS_DIR = "/var/azureml-deps"
#: manylinux_2_17 is manylinux2014's glibc; a base with an unknown glibc is assumed
#: that old, so chosen wheels run on any glibc Linux.
_MIN_GLIBC = (2, 17)
#: pip's backtracking resolver: the legacy one (pex's default with its vendored pip) takes the
#: newest version of a shared dependency and then fails (azureml-core and python-dateutil 4)
RESOLVER_ARGS = ("--resolver-version", "pip-2020-resolver")


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


def deps_key(requirement_files: list[Path], info: BaseInfo, extra_args: list[str] | None = None) -> dict[str, object]:
    """What decides the resolved deps: the requirements' texts, the complete platform, pex's version, pex's args."""
    import pex.version

    return {"platform": complete_platform(info), "pex": pex.version.__version__, "args": [*RESOLVER_ARGS, *(extra_args or [])],
            "reqs": [p.read_text() for p in requirement_files]}


def _deps_dir(cache: BlobCache, key_src: dict[str, object]) -> Path:
    return cache.root / "deps" / hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:32]


def deps_cached(cache: BlobCache, key_src: dict[str, object]) -> bool:
    """Whether ``resolve_deps`` would find these deps in the cache (and so not run pex)."""
    return (_deps_dir(cache, key_src) / ".complete").is_file()


def resolve_deps(cache: BlobCache, requirement_files: list[Path], info: BaseInfo, *,
                 extra_args: list[str] | None = None, log=print, source: str | None = None,
                 debug: bool = False) -> Path:  # type: ignore[no-untyped-def]
    """A directory holding the installed requirements for the image, built once.

    Raises BuildError with pex's reason in one line when the requirements cannot be
    resolved for the image's platform (e.g. a package with no wheel for it); ``source``
    names the user's file in it.  With ``debug``, pex's whole output is logged first.
    """
    platform = complete_platform(info)
    key_src = deps_key(requirement_files, info, extra_args)
    final = _deps_dir(cache, key_src)
    if (final / ".complete").is_file():
        return final / "site"
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache.tmp_dir, prefix="deps-"))
    try:
        plat_file = tmp / "platform.json"
        plat_file.write_text(json.dumps(platform))
        cmd = [sys.executable, "-m", "pex.cli", "venv", "create", "--layout", "flat", "-d", str(tmp / "site"),
               "--complete-platform", str(plat_file), *RESOLVER_ARGS]
        for r in requirement_files:
            cmd += ["-r", str(r)]
        cmd += extra_args or []
        log(f"resolving Python dependencies for cp{info.python.replace('.', '')} linux/{info.architecture} with pex")
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PEX_VERBOSE": "0"})
        if proc.returncode != 0:
            if debug:
                log("pex's output:\n" + proc.stderr.rstrip())
            names = source or ", ".join(p.name for p in requirement_files)
            raise BuildError(f"cannot install the Python requirements ({names}) for Python {info.python} "
                             f"linux/{info.architecture}: {_summarise_pex_error(proc.stderr)}; fix the requirement "
                             "or pin a version that has a wheel for that platform (--debug shows pex's output)")
        # pex leaves helper scripts whose shebang is '#!python': harmless, kept for `python3 -m`-less tools
        # a token naming this resolution: the deps layer's index key (recipe) changes when
        # the folder is made again (pex may pick other versions of unpinned requirements)
        (tmp / ".complete").write_text(os.urandom(16).hex())
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final / "site"
