"""The user's environment file: a requirements.txt, or a conda file turned into one.

Conda channels are out of reach where these images are built, so a conda file is
translated: its ``pip:`` list as is; conda packages PyPI has under the same name
with conda's ``=1.2`` read as ``==1.2.*``; ``python=3.x`` checked against the base;
packages only conda has end the build with one line naming them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BuildError, InputError

__all__ = ["UserEnv", "conda_env", "read_user_env", "CONDA_ONLY"]

#: Packages that exist on conda channels but not (usefully) on PyPI: a build that
#: asks for them cannot give the user what they expect.
CONDA_ONLY = frozenset({
    "mkl", "mkl-service", "mkl_fft", "mkl_random", "mkl-include", "intel-openmp", "cudatoolkit", "cudnn", "nccl",
    "libgcc", "libgcc-ng", "libstdcxx-ng", "libgomp", "_libgcc_mutex", "_openmp_mutex", "blas", "libblas",
    "libcblas", "liblapack", "openblas", "libopenblas", "ca-certificates", "openssl", "libffi", "ncurses",
    "readline", "sqlite", "tk", "xz", "zlib", "bzip2", "libuuid", "ld_impl_linux-64", "libzlib", "tzdata",
    "libedit", "libxcb", "icu", "krb5", "libcurl", "libxml2", "cuda-toolkit", "cuda-nvcc", "cudatoolkit-dev",
    "pytorch-cuda", "cpuonly", "nomkl", "r-base", "nodejs", "gcc", "gxx", "make", "cmake-conda",
})
#: conda names whose PyPI name differs
_RENAMES = {"pytorch": "torch", "py-xgboost": "xgboost", "tensorflow-base": "tensorflow", "pytables": "tables",
            "msgpack-python": "msgpack", "python-dateutil": "python-dateutil", "pyyaml": "pyyaml"}
_IGNORED = {"pip", "setuptools", "wheel"}


@dataclass
class UserEnv:
    requirements: list[str] = field(default_factory=list)
    python: str | None = None  # "3.11" when the conda file pins it
    #: the conda file's python dependency as written ("python=3.9.12", "python>=3.8,<3.10")
    python_pin: str | None = None
    notes: list[str] = field(default_factory=list)


def _conda_spec_to_pip(spec: str) -> tuple[str, str]:
    """``numpy=1.26`` -> (numpy, numpy==1.26.*); ``numpy>=1.2`` passes; build strings dropped."""
    spec = spec.strip()
    if "::" in spec:  # channel::package
        spec = spec.split("::", 1)[1]
    m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", spec)
    if not m:
        raise InputError(f"conda dependency {spec!r} is not 'name' or 'name=version'")
    name, rest = m.group(1), m.group(2).strip()
    rest = rest.split(" ")[0] if rest and rest[0] in "=<>!~" else rest
    if not rest:
        return name, name
    if rest.startswith("=") and not rest.startswith("=="):
        version = rest[1:].split("=")[0]  # drop a build string (=1.2=py311_0)
        if version.endswith(".*"):
            return name, f"{name}=={version}"
        return name, f"{name}=={version}.*" if version.count(".") < 2 else f"{name}=={version}"
    return name, name + rest


def _requirement_lines(path: Path, seen: set[Path]) -> list[str]:
    """A requirements.txt's requirement and option lines, comments and continuations resolved.

    ``-r FILE`` is read in place (the lines are merged with the server's, and are written to
    another folder for pex, where a relative path would not be found); ``-c FILE`` is made absolute.
    """
    if path.resolve() in seen:
        return []
    seen.add(path.resolve())
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read requirements file {path}: {exc.strerror}; check -r and the files it includes") from None
    lines: list[str] = []
    for line in re.sub(r"\\\n", "", text).splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        m = re.match(r"^(-r|--requirement|-c|--constraint)(?:\s*=\s*|\s+)(\S+)$", line)
        if m and m.group(1) in ("-r", "--requirement"):
            lines += _requirement_lines(path.parent / m.group(2), seen)
        elif m:
            lines.append(f"{m.group(1)} {(path.parent / m.group(2)).resolve()}")
        elif line:
            lines.append(line)
    return lines


def read_user_env(path: Path | None) -> UserEnv:
    """Read a requirements.txt or a conda environment file (``.yml``/``.yaml``)."""
    if path is None:
        return UserEnv()
    if not path.is_file():
        raise InputError(f"environment file {path} does not exist; give a requirements.txt or conda .yml")
    if path.suffix not in (".yml", ".yaml"):
        return UserEnv(requirements=_requirement_lines(path, set()))
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"conda file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return conda_env(doc, path.name)


def conda_env(doc: object, name: str) -> UserEnv:
    """A conda environment document (a conda .yml's, or an Azure ML environment's inline
    ``python.condaDependencies``) as a UserEnv; ``name`` names it in messages."""
    if not isinstance(doc, dict):
        raise InputError(f"conda file {name} has no 'dependencies:' list")
    env = UserEnv()
    if doc.get("channels"):
        env.notes.append(f"conda channels {', '.join(map(str, doc['channels']))} ignored: packages come from PyPI")
    conda_only: list[str] = []
    for dep in doc.get("dependencies") or []:
        if isinstance(dep, dict):
            for item in dep.get("pip") or []:
                env.requirements.append(str(item))
            continue
        dep_name, req = _conda_spec_to_pip(str(dep))
        lname = dep_name.lower()
        if lname == "python":
            m = re.search(r"(\d+\.\d+)", req)
            env.python = m.group(1) if m else None
            env.python_pin = str(dep).strip()
        elif lname in _IGNORED:
            continue
        elif lname in CONDA_ONLY:
            conda_only.append(dep_name)
        else:
            pypi = _RENAMES.get(lname, dep_name)
            env.requirements.append(req.replace(dep_name, pypi, 1))
    if conda_only:
        raise BuildError(f"conda file {name} asks for conda-only packages: {', '.join(conda_only)}; only pip "
                         "packages can be installed: drop them, or use a base image that has them")
    return env
