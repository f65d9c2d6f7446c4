"""pip's configuration files, read as pip reads them, for the index settings they hold.

A user whose ``pip install`` finds a private feed through ``pip.conf`` expects a build to find
it too, but pex runs pip isolated from its configuration: the settings are read here and given
to pex as flags (``indexes``). pip's order, each later one overriding a key of the earlier:

1. site-wide: ``$XDG_CONFIG_DIRS/pip/pip.conf`` (default ``/etc/xdg/pip/pip.conf``), ``/etc/pip.conf``;
2. the user's: ``~/.pip/pip.conf``, ``$XDG_CONFIG_HOME/pip/pip.conf`` (default ``~/.config/pip/pip.conf``),
   skipped when ``PIP_CONFIG_FILE`` names a file that exists;
3. the environment's: ``$VIRTUAL_ENV/pip.conf`` (pip reads its own ``sys.prefix``: the activated
   environment's ``pip`` is the one a user runs);
4. ``$PIP_CONFIG_FILE``.

``PIP_CONFIG_FILE=/dev/null`` reads none (pip's way to ignore them). Within the merged files,
``[install]`` and ``[download]`` (pex resolves with ``pip download``, a user installs with
``pip install``) override ``[global]``; the ``PIP_*`` variables override all of them (``indexes``).

pex's own pip still reads some of these files (its ``--isolated`` skips the user's files and the
``PIP_*`` variables, not the site-wide ones nor ``$PIP_CONFIG_FILE``): their index keys would
join the ones given to pex, a URL there without its password (the keyring's) would win over
the one with it, and a cache key would not know them. ``for_pex`` is the file pex's pip reads
instead of ``$PIP_CONFIG_FILE``: its other settings (``cert``, ``constraint``, ``timeout``…)
kept, every index key emptied, so the settings read here are the only ones.
"""

from __future__ import annotations

import configparser
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

__all__ = ["KEYS", "PipConfig", "config_files", "for_pex", "pip_environment", "read_pip_config"]

#: the settings read (pip's names; ``index_url`` is also accepted, as pip does)
KEYS = ("index-url", "extra-index-url", "find-links", "trusted-host", "no-index")
_SECTIONS = ("global", "download", "install")


def pip_environment() -> Mapping[str, str]:
    """The process environment as pip sees it: the one place the ``PIP_*`` variables, ``PIP_CONFIG_FILE``
    and the folders pip's files are found by (``HOME``, ``XDG_*``, ``VIRTUAL_ENV``) are read.

    They are not ``Settings``: they are pip's own configuration, which a user's ``pip install``
    already obeys, and the build hands them to pex's pip as pip would read them (``indexes``,
    ``for_pex``); ociassemble has no flag or config key of its own for them. A ``${VAR}`` of a
    requirements file is expanded from here too, as pip does.
    """
    return os.environ


@dataclass(frozen=True)
class PipConfig:
    """The index settings pip's configuration files give: key -> (value, the file it came from)."""

    values: tuple[tuple[str, str, str], ...] = ()

    def get(self, key: str) -> tuple[str, str] | None:
        for k, value, where in self.values:
            if k == key:
                return value, where
        return None


def config_files(environ: Mapping[str, str]) -> list[Path]:
    """pip's configuration files in the order it reads them (a later one wins), existing or not."""
    env_file = environ.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:
        return []
    home = Path(environ.get("HOME") or os.path.expanduser("~"))
    xdg_dirs = [d for d in environ.get("XDG_CONFIG_DIRS", "").split(":") if d] or ["/etc/xdg"]
    files = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs] + [Path("/etc/pip.conf")]
    if not (env_file and os.path.exists(env_file)):
        files += [home / ".pip" / "pip.conf", Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf"]
    if environ.get("VIRTUAL_ENV"):
        files.append(Path(environ["VIRTUAL_ENV"]) / "pip.conf")
    if env_file:
        files.append(Path(env_file))
    return files


def _normalise(key: str) -> str:
    key = key.lower().replace("_", "-")
    return key[2:] if key.startswith("--") else key


def read_pip_config(environ: Mapping[str, str] | None = None) -> PipConfig:
    """The index settings of pip's configuration files (none found: empty).

    Raises InputError for a file that is there but is not an ini file pip could read.
    """
    env = pip_environment() if environ is None else environ
    merged: dict[tuple[str, str], tuple[str, str]] = {}
    for path in config_files(env):
        if not path.is_file():
            continue
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError, OSError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(f"{path}: pip's configuration file cannot be read ({reason}); fix it, "
                             "or set PIP_CONFIG_FILE=/dev/null to build without pip's configuration")
        for section in parser.sections():
            if section not in _SECTIONS:
                continue
            for key, value in parser.items(section):
                key = _normalise(key)
                if key in KEYS:
                    merged[(section, key)] = (value, str(path))
    out: dict[str, tuple[str, str]] = {}
    for section in _SECTIONS:  # pip's override order: global, then the command's section
        for (sec, key), found in merged.items():
            if sec == section:
                out[key] = found
    return PipConfig(tuple((k, v, w) for k, (v, w) in sorted(out.items())))


_NEUTRAL = {"index-url": "https://pypi.org/simple", "extra-index-url": "", "find-links": "", "trusted-host": "",
            "no-index": "false"}


def for_pex(environ: Mapping[str, str] | None = None) -> str | None:
    """The text of the ``PIP_CONFIG_FILE`` pex's pip is to read (None: leave it, pip reads none).

    It is read last, so its empty index keys in every section pip reads override those of the
    site-wide files; the rest of ``$PIP_CONFIG_FILE`` is kept. May hold what that file holds
    (a proxy's password): write it to a private temporary file only.
    """
    env = pip_environment() if environ is None else environ
    if env.get("PIP_CONFIG_FILE") == os.devnull:
        return None
    parser = configparser.RawConfigParser()
    own = env.get("PIP_CONFIG_FILE")
    if own and os.path.isfile(own):
        try:
            parser.read(own, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError, OSError):
            pass  # read_pip_config says what is wrong with it, first
    for section in (*_SECTIONS, "wheel"):
        if not parser.has_section(section):
            parser.add_section(section)
        for key in list(parser.options(section)):
            if _normalise(key) in KEYS:
                parser.remove_option(section, key)
        for key, value in _NEUTRAL.items():
            parser.set(section, key, value)
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()
