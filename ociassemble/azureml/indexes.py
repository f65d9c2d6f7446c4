"""Where Python packages come from: PyPI, or private indexes and find-links folders, and their credentials.

pip takes its index settings from requirements files (``--index-url``, ``--extra-index-url``,
``--find-links``, ``--no-index``, ``--trusted-host``) and from its environment
(``PIP_INDEX_URL``, ``PIP_EXTRA_INDEX_URL``, ``PIP_FIND_LINKS``, ``PIP_NO_INDEX``,
``PIP_TRUSTED_HOST``) and configuration files (``pip.conf``, ``pipconfig``): Azure Artifacts,
Artifactory and devpi users set them there. pex runs pip isolated from all three, so they are
read here and given to pex as its own flags, with pip's meaning (an ``--index-url`` replaces
PyPI, an extra one is added to it). Lines of a requirements file win over the environment, and
the environment over the configuration files, as in pip.

Credentials may sit in the URL (``https://user:token@host/simple``, also written with
``${VAR}`` as pip expands it), in ``~/.netrc`` (pex and pip read it themselves), in the
environment variables above, or in a keyring (``keyringauth``: a URL with a user and no password). They go to pex's command line only: every other place an
index is named (the lock, cache keys, logs, ``--json``, error lines) gets ``redacted`` text.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

from ..errors import InputError
from .pipconfig import PipConfig, pip_environment

__all__ = ["PYPI", "IndexConfig", "index_config", "inline_password", "redact", "strip_credentials"]

PYPI = "https://pypi.org/simple"
#: the host PyPI serves its files from (a locked file's URL there is PyPI's)
PYPI_FILES = "files.pythonhosted.org"
_OPTION = re.compile(r"^(-i|--index-url|--extra-index-url|-f|--find-links|--trusted-host|--no-index)(?:\s*=\s*|\s+|$)(.*)$")
_ENV_VAR = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
#: userinfo of a URL in any text (pex's and pip's messages quote URLs as they were given)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]+@")


def strip_credentials(url: str) -> str:
    """``url`` without its ``user:password@`` (a path or ``file:`` URL is returned as is)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with every URL's userinfo and each of ``secrets`` replaced (``<hidden>``)."""
    text = _USERINFO.sub(lambda m: m.group("scheme") + "<hidden>@", text)
    for secret in sorted((s for s in secrets if len(s) >= 3), key=len, reverse=True):
        text = text.replace(secret, "<hidden>")
    return text


def inline_password(text: str) -> bool:
    """Whether ``text`` (a requirements file) writes a password or token into a URL itself
    (``https://user:token@host``), rather than naming it (``${TOKEN}``, pip's expansion)."""
    for m in re.finditer(r"[A-Za-z][A-Za-z0-9+.-]*://([^/@\s'\"]+)@", text):
        userinfo = m.group(1)
        secret = userinfo.split(":", 1)[1] if ":" in userinfo else userinfo
        if secret and not _ENV_VAR.fullmatch(secret):
            return True
    return False


def _expand(value: str, environ: Mapping[str, str], where: str) -> str:
    """pip's ``${VAR}`` expansion in a requirements file's option (how tokens are kept out of the file)."""
    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in environ:
            raise InputError(f"{where}: ${{{m.group(1)}}} is not set; export it (pip expands it in requirements files)")
        return environ[m.group(1)]

    return _ENV_VAR.sub(sub, value)


@dataclass(frozen=True)
class IndexConfig:
    """The package sources pex resolves from (PyPI when nothing is said), credentials included.

    ``index_url`` None: PyPI; ``no_index``: no index at all (find-links only).
    """

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    trusted_hosts: tuple[str, ...] = ()
    no_index: bool = False
    #: where each setting came from, for messages ("requirements.txt", "PIP_INDEX_URL")
    sources: tuple[str, ...] = field(default=(), compare=False)
    #: the requirements file's folder: a relative ``--find-links`` path is relative to it, as in pip
    #: (kept as written everywhere else: an absolute path would tie a lock to one checkout)
    base_dir: str | None = field(default=None, compare=False)

    def __repr__(self) -> str:  # never the credentials, wherever it is printed
        return f"IndexConfig({self.redacted()})"

    @property
    def indexes(self) -> list[str]:
        """Every index pex is to ask, first the main one."""
        if self.no_index:
            return []
        return [self.index_url or PYPI, *self.extra_index_urls]

    @property
    def secrets(self) -> list[str]:
        """The passwords and tokens in these URLs (to hide them in any text pex prints)."""
        out = []
        for url in [*self.indexes, *self.find_links]:
            parts = urlsplit(url)
            if "@" in parts.netloc:
                userinfo = parts.netloc.rsplit("@", 1)[0]
                out += [p for p in userinfo.split(":", 1) if p]
        return list(dict.fromkeys([*out, *(unquote(p) for p in out)]))  # a keyring's password is quoted

    def pex_args(self) -> list[str]:
        """pex's flags for these sources (with credentials: for pex's command line only)."""
        args: list[str] = []
        if self.no_index or self.index_url:
            args.append("--no-pypi")
        for url in self.indexes if (self.no_index or self.index_url) else self.extra_index_urls:
            args += ["--index", url]
        for url in self.find_links:
            if self.base_dir and "://" not in url and not os.path.isabs(url):
                url = os.path.join(self.base_dir, url)
            args += ["--find-links", url]
        return args

    def redacted(self) -> dict[str, object]:
        """These settings with no credentials: what cache keys, the lock and messages may hold."""
        return {"indexes": [strip_credentials(u) for u in self.indexes],
                "find_links": [strip_credentials(u) for u in self.find_links],
                "trusted_hosts": sorted(self.trusted_hosts)}

    def index_of(self, file_url: str) -> str:
        """The index or find-links location (no credentials) a locked file's URL came from, best known."""
        clean = strip_credentials(file_url)
        host = urlsplit(clean).netloc
        if host == PYPI_FILES:
            return PYPI
        for url in [*self.indexes, *self.find_links]:
            plain = strip_credentials(url)
            if clean.startswith(plain.rstrip("/") + "/") or (host and urlsplit(plain).netloc == host):
                return plain
        return clean.rsplit("/", 1)[0]


def _split_env_list(value: str) -> list[str]:
    return [v for v in value.split() if v]


def index_config(lines: Sequence[str], *, source: str = "requirements", base_dir: str | None = None,
                 environ: Mapping[str, str] | None = None,
                 pip_config: PipConfig | None = None) -> tuple[IndexConfig, list[str]]:
    """The index settings of requirement ``lines``, pip's environment and ``pip_config`` (its
    configuration files, ``read_pip_config``), and the lines left.

    ``base_dir``: the requirements file's folder (a relative ``--find-links`` is relative to it).

    Raises InputError for an option with no value, or a ``${VAR}`` that is not set.
    """
    env = pip_environment() if environ is None else environ
    index_url: str | None = None
    extra: list[str] = []
    links: list[str] = []
    trusted: list[str] = []
    no_index = False
    sources: list[str] = []
    rest: list[str] = []
    for line in lines:
        m = _OPTION.match(line.strip())
        if not m:
            rest.append(line)
            continue
        flag, value = m.group(1), m.group(2).strip()
        if flag == "--no-index":
            no_index = True
            sources.append(source)
            continue
        try:
            value = shlex.split(value)[0] if value else ""
        except ValueError:
            pass
        if not value:
            raise InputError(f"{source}: {flag} needs a value (e.g. {flag} https://pkgs.example.com/simple)")
        value = _expand(value, env, source)
        if flag in ("-i", "--index-url"):
            index_url = value
        elif flag == "--extra-index-url":
            extra.append(value)
        elif flag in ("-f", "--find-links"):
            links.append(value)
        else:
            trusted.append(value)
        sources.append(source)
    # pip's options: below the requirements file's lines; a PIP_* variable overrides the
    # same key of pip's configuration files (pip's own order of precedence)
    conf = pip_config or PipConfig()

    def option(key: str) -> tuple[str, str] | None:
        var = "PIP_" + key.upper().replace("-", "_")
        if env.get(var, "").strip():
            return env[var].strip(), var
        found = conf.get(key)
        return (found[0].strip(), found[1]) if found and found[0].strip() else None

    found = option("index-url")
    if index_url is None and found:
        index_url, where = found
        sources.append(where)
    for key, target in (("extra-index-url", extra), ("find-links", links), ("trusted-host", trusted)):
        found = option(key)
        values = [v for v in _split_env_list(found[0]) if v not in target] if found else []
        if found and values:
            target.extend(values)
            sources.append(found[1])
    found = option("no-index")
    if not no_index and found and found[0].lower() in ("1", "true", "yes", "on", "y", "t"):
        no_index = True
        sources.append(found[1])
    return IndexConfig(index_url, tuple(dict.fromkeys(extra)), tuple(dict.fromkeys(links)),
                       tuple(dict.fromkeys(trusted)), no_index, tuple(dict.fromkeys(sources)), base_dir), rest
