"""Finding the in-image files shipped with ociassemble (the top-level ``layers/`` folder).

In a source checkout they are ``<repo>/layers``; in an installed wheel they are the
package data ``ociassemble/_layers`` (pyproject.toml maps one onto the other).
"""

from __future__ import annotations

from pathlib import Path

from .errors import BuildError

__all__ = ["layers_dir"]


def layers_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "layers", here / "_layers"):
        if (candidate / "azureml-app").is_dir():
            return candidate
    raise BuildError(f"ociassemble's in-image files (layers/) are missing next to {here}; reinstall ociassemble")
