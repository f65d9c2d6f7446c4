"""The build context: which files of the user's folder go into a layer.

``.ociassembleignore`` in the folder (gitignore syntax, via pathspec) plus defaults
that never belong in an image (VCS data, caches, virtualenvs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import pathspec

__all__ = ["ignore_for", "DEFAULT_IGNORES", "IGNORE_FILE"]

IGNORE_FILE = ".ociassembleignore"
DEFAULT_IGNORES = (".git/", ".hg/", ".svn/", "__pycache__/", "*.pyc", ".venv/", "venv/", ".mypy_cache/",
                   ".pytest_cache/", ".ipynb_checkpoints/", ".DS_Store", IGNORE_FILE)


def ignore_for(root: Path, also: Iterable[Path] = ()) -> Callable[[Path], bool]:
    """A predicate telling whether a path under ``root`` is left out of the layer.

    ``also`` are paths excluded outright (models and outputs that sit in the folder
    and go into their own layer, or nowhere).
    """
    lines = list(DEFAULT_IGNORES)
    f = root / IGNORE_FILE
    if f.is_file():
        lines += f.read_text().splitlines()
    spec = pathspec.PathSpec.from_lines("gitwildmatch", lines)
    excluded = {os.path.abspath(p) for p in also}

    def ignored(path: Path) -> bool:
        if os.path.abspath(path) in excluded:
            return True
        rel = os.path.relpath(path, root)
        if path.is_dir() and not path.is_symlink():
            rel += "/"
        return spec.match_file(rel)

    return ignored
