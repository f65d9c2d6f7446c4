"""The project's config file: ``ociassemble.toml``, or ``[tool.ociassemble]`` in pyproject.toml, read into typed values.

Relative paths in a config file are relative to that file's folder, so a build gives the
same image from wherever it is started. Every key is one of ``settings.Settings``'s
fields; the flags go over them there (``Settings.load``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import InputError, UsageError
from .image.platform import parse_platforms
from .modelspec import ModelSpec

__all__ = ["CONFIG_KEYS", "ConfigFile", "read_config"]

_PATH_KEYS = frozenset({"entry_script", "source_dir", "requirements", "conda_file", "apt_keyring", "sign_key",
                        "inference_config", "deploy_config", "environment"})
_STR_KEYS = frozenset({"base", "image", "output", "compression", "source_url", "revision", "source_name", "apt_mirror"})
#: every key a config file may set (the flags' names, ``-`` or ``_``)
CONFIG_KEYS = _PATH_KEYS | _STR_KEYS | {"models", "compression_level", "install_serving_stack", "platform", "python",
                                        "apt", "env", "labels", "speculative_upload"}


@dataclass(frozen=True)
class ConfigFile:
    """What a config file says (``values``: key → typed value), and where it is (None: no file)."""

    root: Path
    path: Path | None = None
    values: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


def _strings(value: Any, where: str, key: str, example: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v.strip() for v in items):
        raise UsageError(f"{where}: {key} must be {example}")
    return tuple(v.strip() for v in items)


def _whole(value: Any, where: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise UsageError(f"{where}: compression_level must be a whole number, e.g. compression_level = 1")
    return value


def _flag(value: Any, where: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{where}: {key} must be true or false")
    return value


def _python(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f'{where}: python must be a version string, e.g. python = "3.9"')
    return value.strip()


def _table(value: Any, where: str, key: str) -> Mapping[str, str]:
    if not isinstance(value, dict):
        raise UsageError(f"{where}: {key} must be a table of strings, e.g. {key} = {{ KEY = \"value\" }}")
    return MappingProxyType({str(a): str(b) for a, b in value.items()})


#: key → its reader (value, where the file is, the file's folder)
_READERS: dict[str, Callable[[Any, str, Path], Any]] = {
    "models": lambda v, w, root: tuple(ModelSpec.parse(m, root) for m in (v if isinstance(v, list) else [v])),
    "compression_level": lambda v, w, root: _whole(v, w),
    "install_serving_stack": lambda v, w, root: _flag(v, w, "install_serving_stack"),
    "speculative_upload": lambda v, w, root: _flag(v, w, "speculative_upload"),
    "platform": lambda v, w, root: parse_platforms(_strings(
        v, w, "platform", 'a string or a list of them, e.g. platform = ["linux/amd64", "linux/arm64"]')),
    "python": lambda v, w, root: _python(v, w),
    "apt": lambda v, w, root: _strings(v, w, "apt", 'a list of Debian package names, e.g. apt = ["libgomp1"]'),
    "env": lambda v, w, root: _table(v, w, "env"),
    "labels": lambda v, w, root: _table(v, w, "labels"),
}


def _values(data: dict[str, Any], root: Path, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        k = key.replace("-", "_")
        if k not in CONFIG_KEYS:
            raise UsageError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(CONFIG_KEYS))}")
        if k in _PATH_KEYS:
            out[k] = (root / str(value)) if value else None
        elif k in _STR_KEYS:
            out[k] = str(value) if value is not None else None
        else:
            out[k] = _READERS[k](value, where, root)
    return out


def read_config(directory: Path, config: Path | None = None) -> ConfigFile:
    """The config file of the project at ``directory`` (``config``, else its ociassemble.toml, else its
    pyproject.toml's ``[tool.ociassemble]``); none is an empty ``ConfigFile`` rooted at ``directory``.

    Raises InputError for a named file that does not exist or a file that is not TOML, UsageError
    for an unknown key or a value of the wrong kind.
    """
    candidates = [config] if config else [directory / "ociassemble.toml", directory / "pyproject.toml"]
    for path in candidates:
        if path is None or not path.is_file():
            if config is not None:
                raise InputError(f"config file {config} does not exist")
            continue
        try:
            doc = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{path} is not valid TOML: {exc}") from None
        data = doc.get("tool", {}).get("ociassemble") if path.name == "pyproject.toml" else doc
        if data is None:
            continue
        return ConfigFile(path.parent, path, MappingProxyType(_values(data, path.parent, str(path))))
    return ConfigFile(directory)
