"""A model the image serves: its file or folder, and the name and version Azure ML registers it under."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError

__all__ = ["ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """A model file or folder, served at ``azureml-models/<name>/<version>/<its own name>``."""

    path: Path
    name: str
    version: str = "1"

    @classmethod
    def parse(cls, value: Any, root: Path) -> "ModelSpec":
        """``PATH[:NAME[:VERSION]]`` (a flag's, relative to ``root``) or a config table with ``path``."""
        if isinstance(value, dict):
            if "path" not in value:
                raise UsageError(f"model entry {value!r} needs a 'path'")
            path = root / str(value["path"])
            return cls(path, str(value.get("name") or _default_name(path)), str(value.get("version", "1")))
        parts = str(value).split(":")
        path = root / parts[0]
        name = parts[1] if len(parts) > 1 and parts[1] else _default_name(path)
        version = parts[2] if len(parts) > 2 and parts[2] else "1"
        return cls(path, name, version)


def _default_name(path: Path) -> str:
    return path.name.split(".")[0] or "model"
