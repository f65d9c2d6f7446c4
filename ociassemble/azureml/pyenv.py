"""The deps layer's inputs: the user's environment file merged with the scoring server's pins, and where
packages come from.

``build`` and ``lock`` read them the same way, so a lock is made from exactly what a build
would resolve; ``normalised`` is what a lock records as its inputs (a requirement added or a
pin changed makes the lock stale, a comment or the order of lines does not).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..resources import layers_dir
from .indexes import IndexConfig, index_config
from .project import Project
from .requirements import Merged, merge_requirements, read_app_pins
from .userenv import UserEnv, read_user_env

__all__ = ["PythonInputs", "python_inputs"]


@dataclass(frozen=True)
class PythonInputs:
    env_file: Path | None
    user_env: UserEnv
    merged: Merged  # the requirement lines pex gets (no index options: those are in ``indexes``)
    indexes: IndexConfig  # from the requirements file and pip's environment variables
    #: those the requirements file names (a lock's input: PIP_INDEX_URL and the like differ
    #: between a laptop and CI, and the lock's files are pinned by hash whichever index serves them)
    file_indexes: IndexConfig = IndexConfig()

    @property
    def source(self) -> str:
        """How the requirements are named in messages."""
        return f"{self.env_file.name} with the scoring server's" if self.env_file else "the scoring server's"

    def normalised(self) -> dict[str, Any]:
        """The inputs a lock is made from, without comments, order or credentials."""
        lines = []
        for line in self.merged.lines:
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
        return {"requirements": sorted(set(lines)), "indexes": self.file_indexes.redacted()}


def python_inputs(project: Project, log: Callable[[str], None]) -> PythonInputs:
    """Read the project's environment file and merge it with the server's pins (notes go to ``log``).

    Raises InputError/BuildError for an unreadable file, a conda-only package or a conflict.
    """
    env_file = project.conda_file or project.requirements
    user_env = read_user_env(env_file)
    for note in user_env.notes:
        log(note)
    source = env_file.name if env_file else "your environment"
    base_dir = str(env_file.parent.resolve()) if env_file else None
    indexes, lines = index_config(user_env.requirements, source=source, base_dir=base_dir)
    file_indexes, _ = index_config(user_env.requirements, source=source, base_dir=base_dir,
                                   environ={k: v for k, v in os.environ.items() if not k.startswith("PIP_")})
    for host in indexes.trusted_hosts:
        if not any(u.startswith(f"http://{host}") for u in [*indexes.indexes, *indexes.find_links]):
            log(f"--trusted-host {host}: pex verifies TLS for https indexes; an http index is trusted as it is given")
    merged = merge_requirements(read_app_pins(layers_dir() / "app-requirements.txt"), lines, source=source,
                                install_serving_stack=project.install_serving_stack)
    for note in merged.notes:
        log(note)
    return PythonInputs(env_file, user_env, merged, indexes, file_indexes)
