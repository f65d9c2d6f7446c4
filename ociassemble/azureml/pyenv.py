"""The deps layer's inputs: the user's environment file merged with the scoring server's pins, and where
packages come from.

``build`` and ``lock`` read them the same way, so a lock is made from exactly what a build
would resolve; ``normalised`` is what a lock records as its inputs (a requirement added or a
pin changed makes the lock stale, a comment or the order of lines does not). The server's
pins depend on the image's Python (a ``python_version`` marker), which a ``--base`` only
tells once read: ``for_python`` merges them again for it, and ``normalised`` takes the
user's lines and the whole pin file, so that re-merge never makes a lock stale.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..errors import InputError
from ..resources import layers_dir
from .debianbase import DEFAULT_PYTHON
from .indexes import IndexConfig, index_config
from .keyringauth import from_keyring
from .pipconfig import pip_environment, read_pip_config
from .project import Project
from .pythonpin import PythonPin, choose_python, parse_pin
from .requirements import Merged, merge_requirements, read_app_pins
from .userenv import UserEnv, conda_env, read_user_env

__all__ = ["PythonInputs", "python_inputs", "python_pins", "user_env_of", "wanted_python"]



@dataclass(frozen=True)
class PythonInputs:
    env_file: Path | None
    user_env: UserEnv
    merged: Merged  # the requirement lines pex gets (no index options: those are in ``indexes``)
    indexes: IndexConfig  # from the requirements file, pip's environment variables and pip.conf
    #: those the requirements file names (a lock's input: PIP_INDEX_URL and the like differ
    #: between a laptop and CI, and the lock's files are pinned by hash whichever index serves them)
    file_indexes: IndexConfig = IndexConfig()
    #: the Python the server's pins were chosen for ("3.11"), and the pins that chose it
    python: str = DEFAULT_PYTHON
    pins: tuple[PythonPin | None, PythonPin | None] = (None, None)
    #: how the user's packages are named in messages (None: none given), and their lines
    #: without index options (what ``for_python`` merges again)
    env_name: str | None = None
    user_lines: tuple[str, ...] = ()
    install_serving_stack: bool = False

    @property
    def source(self) -> str:
        """How the requirements are named in messages."""
        return f"{self.env_name} with the scoring server's" if self.env_name else "the scoring server's"

    def for_python(self, python: str) -> "PythonInputs":
        """These inputs with the server's pins for ``python`` (itself when they already are)."""
        if python == self.python:
            return self
        return replace(self, python=python, merged=_merge(self.user_lines, python, self.env_name,
                                                           self.install_serving_stack))

    def normalised(self) -> dict[str, Any]:
        """The inputs a lock is made from, without comments, order or credentials."""
        lines = []
        for line in self.user_lines:
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if text.startswith(("-c ", "--constraint ")):  # an absolute path: the file's content is the input
                path = Path(text.split(None, 1)[1])
                try:
                    text = "-c sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
                except OSError:
                    pass
            else:
                try:
                    req = Requirement(text)
                    req.name = canonicalize_name(req.name)
                    text = str(req)
                except InvalidRequirement:
                    pass
            lines.append(text)
        server = hashlib.sha256((layers_dir() / "app-requirements.txt").read_bytes()).hexdigest()
        return {"requirements": sorted(set(lines)), "indexes": self.file_indexes.redacted(),
                "server": {"pins": f"sha256:{server}", "install_serving_stack": self.install_serving_stack}}


def _merge(lines: Sequence[str], python: str, env_name: str | None, install_serving_stack: bool) -> Merged:
    return merge_requirements(read_app_pins(layers_dir() / "app-requirements.txt", python), list(lines),
                              source=env_name or "your environment", install_serving_stack=install_serving_stack)


def user_env_of(project: Project) -> tuple[UserEnv, str | None]:
    """The project's Python packages (its requirements, conda file or v1 environment's inline
    conda dependencies) and the name that stands for them in messages (None: none given).

    With ``userManagedDependencies`` (an Azure ML v1 environment) none are installed, as in
    Azure ML; the Python they pin still picks the base.
    """
    if project.requirements and project.conda_file:
        raise InputError("give either requirements or a conda file, not both")
    if project.conda_doc is not None:
        env, name = conda_env(project.conda_doc, project.conda_name or "the environment"), project.conda_name
    else:
        path = project.conda_file or project.requirements
        env, name = read_user_env(path), (path.name if path else None)
    if project.user_managed_dependencies:
        env = UserEnv(python=env.python, python_pin=env.python_pin, notes=env.notes)
    return env, name


def python_pins(project: Project, user_env: UserEnv, source: str | None) -> tuple[PythonPin | None, PythonPin | None]:
    """The project's own Python pin (``python``, ``--python``) and its environment's."""
    mine = parse_pin(project.python, project.python_source or "python") if project.python else None
    conda = parse_pin(user_env.python_pin, source or "the conda file") if user_env.python_pin else None
    return mine, conda


def wanted_python(project: Project) -> str:
    """The Python of the default base this project picks ("3.9"; nothing pinned: 3.11).

    Raises InputError when its pins disagree or no default base has the Python they pin.
    """
    user_env, source = user_env_of(project)
    return choose_python(*python_pins(project, user_env, source))


def python_inputs(project: Project, log: Callable[[str], None]) -> PythonInputs:
    """Read the project's environment file and merge it with the server's pins (notes go to ``log``).

    The pins are those for the default base's Python (the one the project pins); with a
    ``--base``, for the Python it is expected to have (the pinned minor, else the default's)
    until ``for_python`` is given the one it has.

    Raises InputError/BuildError for an unreadable file, a conda-only package, pins no default
    base has, or a conflict.
    """
    user_env, env_name = user_env_of(project)
    for note in user_env.notes:
        log(note)
    pins = python_pins(project, user_env, env_name)
    if project.base is None:
        python = choose_python(*pins)
    else:
        exact = re.match(r"\d+\.\d+", project.python or "")
        python = exact.group(0) if exact else user_env.python or DEFAULT_PYTHON
    env_file = None if project.conda_doc is not None else project.conda_file or project.requirements
    source = env_name or "your environment"
    base_dir = str(env_file.parent.resolve()) if env_file else None
    indexes, lines = index_config(user_env.requirements, source=source, base_dir=base_dir,
                                  pip_config=read_pip_config())
    indexes = from_keyring(indexes, log)
    # the lock's input: the requirements file's own (not PIP_* nor pip.conf: they are the machine's)
    file_indexes, _ = index_config(user_env.requirements, source=source, base_dir=base_dir,
                                   environ={k: v for k, v in pip_environment().items() if not k.startswith("PIP_")})
    for host in indexes.trusted_hosts:
        if not any(u.startswith(f"http://{host}") for u in [*indexes.indexes, *indexes.find_links]):
            log(f"--trusted-host {host}: pex verifies TLS for https indexes; an http index is trusted as it is given")
    merged = _merge(lines, python, env_name, project.install_serving_stack)
    for note in merged.notes:
        log(note)
    return PythonInputs(env_file, user_env, merged, indexes, file_indexes, python=python, pins=pins,
                        env_name=env_name, user_lines=tuple(lines), install_serving_stack=project.install_serving_stack)
