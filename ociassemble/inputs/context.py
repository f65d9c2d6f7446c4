"""The build context: which files of the user's folder go into a layer.

``.ociassembleignore`` in the folder (gitignore syntax, via pathspec) plus defaults
that never belong in an image (VCS data, caches, virtualenvs); and the guard against
files named like secrets (keys, ``.env``, credential files) reaching a layer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import pathspec

from ..errors import InputError

if TYPE_CHECKING:
    from ..image.layer import Entry

__all__ = [
    "ignore_for",
    "DEFAULT_IGNORES",
    "IGNORE_FILE",
    "SECRET_NAMES",
    "SECRET_PATHS",
    "SECRET_PATTERNS",
    "ENV_ALLOW_SECRETS",
    "SecretsInContextError",
    "find_secrets",
    "check_secrets",
    "secrets_allowed",
]

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
    spec = pathspec.PathSpec.from_lines(_SYNTAX, lines)
    excluded = {os.path.abspath(p) for p in also}

    def ignored(path: Path) -> bool:
        if os.path.abspath(path) in excluded:
            return True
        rel = os.path.relpath(path, root)
        if path.is_dir() and not path.is_symlink():
            rel += "/"
        return spec.match_file(rel)

    return ignored


#: Names of files that usually hold credentials (gitignore syntax), matched against each
#: file's own name; public halves and templates are let through (``id_rsa.pub``,
#: ``.env.example``). Kept to names whose content is a secret nearly every time: a false
#: alarm costs one ``.ociassembleignore`` line or ``--allow-secrets``.
SECRET_NAMES = (
    ".env", ".env.*", "!.env.example", "!.env.sample", "!.env.template", "!.env.dist",
    "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keytab",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "!id_*.pub",
    ".netrc", "_netrc", ".pypirc", ".npmrc", ".git-credentials", ".htpasswd", ".dockercfg",
    "kubeconfig", "*.kubeconfig", "credentials*.json", "application_default_credentials.json",
)
#: Credential files known by their folder too, matched against the whole in-image path.
SECRET_PATHS = (
    "**/.docker/config.json", "**/.aws/credentials", "**/.kube/config",
    "**/.ssh/*", "!**/.ssh/*.pub", "!**/.ssh/known_hosts", "!**/.ssh/config",
)
SECRET_PATTERNS = SECRET_NAMES + SECRET_PATHS


def _syntax() -> str:
    """pathspec's name for gitignore syntax: ``gitignore`` since 1.0 (``gitwildmatch`` is deprecated there)."""
    try:
        pathspec.util.lookup_pattern("gitignore")
    except KeyError:
        return "gitwildmatch"
    return "gitignore"


_SYNTAX = _syntax()
#: ``OCIASSEMBLE_ALLOW_SECRETS=1`` is ``--allow-secrets`` (for CI, where flags are fixed).
ENV_ALLOW_SECRETS = "OCIASSEMBLE_ALLOW_SECRETS"
#: How many names the error line lists before "and N more".
_LISTED = 8
_NAME_SPEC = pathspec.PathSpec.from_lines(_SYNTAX, SECRET_NAMES)
_PATH_SPEC = pathspec.PathSpec.from_lines(_SYNTAX, SECRET_PATHS)
#: Entry kinds that carry a file's content into a layer (a symlink only names a path).
_CONTENT_KINDS = ("file", "hardlink")


class SecretsInContextError(InputError):
    """Files named like secrets would go into a layer and ``--allow-secrets`` was not given."""


def secrets_allowed(flag: bool = False) -> bool:
    """``--allow-secrets`` given, or ``OCIASSEMBLE_ALLOW_SECRETS`` set to 1/true/yes."""
    return flag or os.environ.get(ENV_ALLOW_SECRETS, "").strip().lower() in ("1", "true", "yes")


def find_secrets(entries: Iterable["Entry"]) -> list["Entry"]:
    """The entries (files and hard links) whose in-image path is named like a secret.

    Example::

        find_secrets(scan_sources([LayerSource(Path("app"), "/opt/app")]))   # [Entry('opt/app/.env', …)]
    """
    return [e for e in entries if e.kind in _CONTENT_KINDS and _named_like_secret(e.name)]


def _named_like_secret(name: str) -> bool:
    """Whether the in-image path ``name`` (relative, ``/``-separated) is named like a secret.

    Names are matched on the file's own name only: a folder called ``.env`` (a virtualenv)
    does not make every file in it a secret.
    """
    return _NAME_SPEC.match_file(name.rpartition("/")[2]) or _PATH_SPEC.match_file(name)


def _shown(e: "Entry") -> str:
    """A hit as the user knows it: the host path, relative to the working folder when under it."""
    if not e.source:
        return "/" + e.name
    rel = os.path.relpath(e.source)
    return e.source if rel.startswith("..") else rel


def check_secrets(entries: Iterable["Entry"], *, allow: bool = False,
                  warn: Callable[[str], None] | None = None) -> list["Entry"]:
    """Refuse files named like secrets before they go into a layer; returns the hits.

    With ``allow`` (``--allow-secrets``) the hits are only reported through ``warn``.
    Raises SecretsInContextError, one line naming the files and both ways out.
    """
    hits = find_secrets(entries)
    if not hits:
        return hits
    names = [_shown(e) for e in hits]
    listed = ", ".join(names[:_LISTED]) + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")
    if allow:
        if warn is not None:
            warn(f"warning: including {len(hits)} file(s) named like secrets in the image (--allow-secrets): {listed}")
        return hits
    raise SecretsInContextError(
        f"{len(hits)} file(s) named like secrets would go into the image: {listed}; add them to "
        f"{IGNORE_FILE} in the source folder (or move them out of the model or --layer folder), "
        f"or pass --allow-secrets ({ENV_ALLOW_SECRETS}=1) to include them anyway")

