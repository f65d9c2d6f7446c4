"""Finding the in-image files shipped with ociassemble (the top-level ``layers/`` folder).

In a source checkout they are ``<repo>/layers``; in an installed wheel they are the
package data ``ociassemble/_layers`` (pyproject.toml maps one onto the other). Wheels
cannot hold symlinks, so the layers' symlinks are listed in ``layers/symlinks.txt``.
"""

from __future__ import annotations

from pathlib import Path

from .errors import BuildError

__all__ = ["layers_dir", "layer_symlinks"]


def layers_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "layers", here / "_layers"):
        if (candidate / "azureml-app").is_dir():
            return candidate
    raise BuildError(f"ociassemble's in-image files (layers/) are missing next to {here}; reinstall ociassemble")


def layer_symlinks(layer: str) -> list[tuple[str, str]]:
    """``(in-image path without leading /, target)`` for each symlink of ``layer``."""
    out = []
    for number, line in enumerate((layers_dir() / "symlinks.txt").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            name, rest = line.split(None, 1)
            path, target = (part.strip() for part in rest.split("->"))
        except ValueError:
            raise BuildError(f"layers/symlinks.txt line {number}: expected 'LAYER /PATH -> TARGET'") from None
        if name == layer:
            out.append((path.lstrip("/"), target))
    return out
