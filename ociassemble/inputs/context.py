"""The build context: which files of the user's folder go into a layer.

``.ociassembleignore`` in the folder (gitignore syntax, via pathspec) plus defaults
that never belong in an image (VCS data, caches, virtualenvs); and the guard against
credentials reaching a layer: files named like secrets (keys, ``.env``) in the image,
known credential files on the host whatever they are called in the image
(``-m ~/.docker/config.json``, ``--layer ~/.aws:/opt/aws``), and files whose first
bytes hold a credential (a docker ``auths`` map with logins, an AWS secret key, a
kubeconfig client key, a PEM private key).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import pathspec

from ..errors import SecretsInContextError

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
    "find_secrets",
    "secret_reason",
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


def _matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A fast ``PathSpec.match_file`` for these patterns: their regexes joined into one for
    the includes and one for the excludes (every ``!`` pattern here follows what it
    exempts, so "an include matches and no exclude does" is gitignore's last-match rule).

    pathspec tries each pattern in turn in Python: 0.45 s for a 5000-file source folder,
    on every build, and the check asks twice per file (in-image name, host path).
    """
    spec = pathspec.PathSpec.from_lines(_SYNTAX, patterns)

    def joined(include: bool) -> re.Pattern[str] | None:
        parts = [re.sub(r"\(\?P<\w+>", "(?:", p.regex.pattern) for p in spec.patterns
                 if p.include is include and p.regex is not None]
        return re.compile("|".join(f"(?:{x})" for x in parts)) if parts else None

    inc, exc = joined(True), joined(False)

    def match(path: str) -> bool:
        return inc is not None and inc.search(path) is not None and (exc is None or exc.search(path) is None)

    return match


_name_matches = _matcher(SECRET_NAMES)
_path_matches = _matcher(SECRET_PATHS)
#: Entry kinds that carry a file's content into a layer (a symlink only names a path).
_CONTENT_KINDS = ("file", "hardlink")
#: How much of each file is read to look for credentials: the start of it only, so a
#: multi-GB model costs one 64 KiB read. Credential files are small; their secret sits
#: within the first KiB (a kubeconfig with a few clusters' CA data within tens of KiB).
SNIFF_BYTES = 64 << 10
#: What a credential looks like inside a file, and what to call the file in the error: the
#: words that must appear (a quick ``in`` test first: most files have none of them), then
#: the pattern. Each asks for a value, not only a name: code that *reads* a key
#: (``aws_secret_access_key=os.environ[...]``) is not a key.
_CONTENT = (
    ((b'"auths"',), re.compile(rb'"auths"\s*:\s*\{.*?"(?:auth|identitytoken|registrytoken|password)"\s*:\s*"[^"\s]{4,}"', re.S),
     "a docker config with registry logins"),
    ((b"aws_secret_access_key", b"AWS_SECRET_ACCESS_KEY"), re.compile(rb"(?im)^[ \t]*(?:export[ \t]+)?aws_secret_access_key[ \t]*[=:][ \t]*[\"']?[A-Za-z0-9/+]{40}[\"']?[ \t]*\r?$"),
     "an AWS secret access key"),
    ((b"client-key-data",), re.compile(rb"(?m)^[ \t]*client-key-data:[ \t]*[\"']?[A-Za-z0-9+/=]{16,}"), "a kubeconfig client key"),
    ((b"PRIVATE KEY",), re.compile(rb"(?m)^-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[ \t]*\r?$"), "a private key"),
)


def secrets_allowed(flag: bool = False) -> bool:
    """``--allow-secrets`` given, or ``OCIASSEMBLE_ALLOW_SECRETS`` set to 1/true/yes."""
    return flag or os.environ.get(ENV_ALLOW_SECRETS, "").strip().lower() in ("1", "true", "yes")


def find_secrets(entries: Iterable["Entry"]) -> list["Entry"]:
    """The entries (files and hard links) that would put a credential into the image (``secret_reason``).

    Example::

        find_secrets(scan_sources([LayerSource(Path("app"), "/opt/app")]))   # [Entry('opt/app/.env', …)]
    """
    return [e for e in entries if secret_reason(e) is not None]


def secret_reason(e: "Entry") -> str | None:
    """Why ``e`` looks like a credential (None if it does not): its in-image name, its host
    path (a known credential file, whatever it is called in the image), or its first
    ``SNIFF_BYTES`` bytes. Only files are read, and only that much of each."""
    if e.kind not in _CONTENT_KINDS:
        return None
    if _named_like_secret(e.name):
        return "named like a secret"
    if not e.source:
        return None
    host = os.path.abspath(e.source) if not os.path.isabs(e.source) else e.source
    if _path_matches(host.lstrip("/")) or _name_matches(os.path.basename(host)):
        return "a credential file"
    if e.kind != "file":
        return None
    try:
        with open(e.source, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError:
        return None  # unreadable here is the layer writer's error to report, with its fix
    for words, pattern, what in _CONTENT:
        if any(w in head for w in words) and pattern.search(head):
            return f"holds {what}"
    return None


def _named_like_secret(name: str) -> bool:
    """Whether the in-image path ``name`` (relative, ``/``-separated) is named like a secret.

    Names are matched on the file's own name only: a folder called ``.env`` (a virtualenv)
    does not make every file in it a secret.
    """
    return _name_matches(name.rpartition("/")[2]) or _path_matches(name)


def _shown(e: "Entry") -> str:
    """A hit as the user knows it: the host path, relative to the working folder when under it."""
    if not e.source:
        return "/" + e.name
    rel = os.path.relpath(e.source)
    return e.source if rel.startswith("..") else rel


def check_secrets(entries: Iterable["Entry"], *, allow: bool = False,
                  warn: Callable[[str], None] | None = None) -> list["Entry"]:
    """Refuse files that look like credentials (``secret_reason``) before they go into a layer; returns the hits.

    With ``allow`` (``--allow-secrets``) the hits are only reported through ``warn``.
    Raises SecretsInContextError, one line naming the files and both ways out.
    """
    found = [(e, why) for e in entries for why in [secret_reason(e)] if why is not None]
    hits = [e for e, _ in found]
    if not hits:
        return hits
    names = [_shown(e) if why == "named like a secret" else f"{_shown(e)} ({why})" for e, why in found]
    listed = ", ".join(names[:_LISTED]) + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")
    if allow:
        if warn is not None:
            warn(f"warning: including {len(hits)} file(s) named like secrets or holding credentials in the image "
                 f"(--allow-secrets): {listed}")
        return hits
    raise SecretsInContextError(
        f"{len(hits)} file(s) named like secrets or holding credentials would go into the image: {listed}; add them to "
        f"{IGNORE_FILE} in the source folder (or move them out of the model or --layer folder), "
        f"or pass --allow-secrets ({ENV_ALLOW_SECRETS}=1) to include them anyway")

