"""Passwords from a keyring: an index URL with a user and no password asks the ``keyring`` command.

pip's ``--keyring-provider subprocess`` runs ``keyring get SERVICE USER`` for such a URL, the
service being the index URL and then its host; Azure Artifacts' ``artifacts-keyring`` and the
keyring backends of other feeds answer it. pex's own pip (20.3.4) has no keyring support, and a
newer one (``--pip-version 23.1+``) would be downloaded from PyPI by pex on first use, which an
offline or PyPI-less runner (the very one with a private feed) cannot do. So the command is asked
here, as pip would ask it, and the password goes into the URL given to pex: the same path every
other credential takes, hidden in every text (``IndexConfig.secrets``) and never in a key, the
lock or a file.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import replace
from urllib.parse import quote, urlsplit, urlunsplit

from .indexes import IndexConfig, strip_credentials

__all__ = ["from_keyring"]

#: a keyring that prompts (a locked desktop wallet) must not hang a build
_TIMEOUT = 30


def _ask(keyring: str, service: str, user: str, env: Mapping[str, str] | None) -> str | None:
    try:
        proc = subprocess.run([keyring, "get", service, user], capture_output=True, text=True, timeout=_TIMEOUT,
                              stdin=subprocess.DEVNULL, env=None if env is None else dict(env))
    except (OSError, subprocess.TimeoutExpired):
        return None
    password = proc.stdout.rstrip("\r\n") if proc.returncode == 0 else ""
    return password or None


def _with_password(url: str, keyring: str, env: Mapping[str, str] | None,
                   log: Callable[[str], None]) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc or "://" not in url:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    if ":" in userinfo or not userinfo:
        return url
    clean = strip_credentials(url)
    for service in (clean, host):  # pip's order: the index URL, then its host
        password = _ask(keyring, service, userinfo, env)
        if password:
            return urlunsplit(parts._replace(netloc=f"{userinfo}:{quote(password, safe='')}@{host}"))
    log(f"{clean}: the keyring has no password for {userinfo!r} (keyring set {clean} {userinfo}); "
        "trying ~/.netrc and no password")
    return url


def from_keyring(config: IndexConfig, log: Callable[[str], None], *,
                 environ: Mapping[str, str] | None = None) -> IndexConfig:
    """``config`` with the keyring's password in each URL that has a user and no password.

    Nothing changes when no URL needs one or the ``keyring`` command is not on PATH (pex and
    pip then try ~/.netrc).
    """
    urls = [config.index_url or "", *config.extra_index_urls, *config.find_links]
    if not any("@" in urlsplit(u).netloc and ":" not in urlsplit(u).netloc.rsplit("@", 1)[0] for u in urls):
        return config
    path = environ.get("PATH") if environ is not None else None
    keyring = shutil.which("keyring", path=path)
    if keyring is None:
        return config
    fill = lambda u: _with_password(u, keyring, environ, log)  # noqa: E731
    return replace(config, index_url=fill(config.index_url) if config.index_url else None,
                   extra_index_urls=tuple(fill(u) for u in config.extra_index_urls),
                   find_links=tuple(fill(u) for u in config.find_links))
