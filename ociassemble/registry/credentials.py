"""Where registry credentials come from and where ``login`` keeps them: docker's config.json and its helpers.

Credentials are looked up, in order, from the explicit options, podman's auth.json
(``$REGISTRY_AUTH_FILE``, same format), and ``$DOCKER_CONFIG/config.json`` or
``~/.docker/config.json``: ``credHelpers`` for the registry, then ``auths``, then
``credsStore``, the helpers being ``docker-credential-<name>`` executables. A missing
file means anonymous, not an error. Where the files are (``CredentialFiles``) is a setting:
the two variables are read once, with the others, by ``settingsload``; this module reads none.

Secrets never appear in a repr, a log line or an error message: ``Credentials``
hides its password.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomicfile import write_atomic
from ..errors import AuthError, UsageError

__all__ = [
    "CredentialFiles",
    "Credentials",
    "docker_config_path",
    "resolve_credentials",
    "same_registry",
    "server_key",
    "store_credentials",
]

#: Docker's key for Docker Hub in config.json and for credential helpers.
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")
#: A credential helper that takes longer than this is hung (they talk to a local keychain).
HELPER_TIMEOUT = 30.0


@dataclass(frozen=True)
class Credentials:
    """A username and secret; the secret is never shown (``repr`` says ``<hidden>``).

    ``identity_token`` marks a secret that is an OAuth2 refresh token (docker's
    ``identitytoken``, or a helper answering user ``<token>``).
    """

    username: str
    password: str = field(repr=False)
    identity_token: bool = False
    source: str = ""

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>, source={self.source!r})"

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def server_key(registry: str) -> str:
    """The key docker uses for ``registry`` in config.json and with credential helpers."""
    return DOCKER_HUB_KEY if registry in _HUB_NAMES else registry


def _normalise_key(key: str) -> str:
    key = re.sub(r"^[a-z]+://", "", key.strip())
    key = key.split("/", 1)[0]
    return "docker.io" if key in _HUB_NAMES else key


def same_registry(a: str, b: str) -> bool:
    """Whether two registry names (host[:port], or docker's keys) are one registry, as the
    docker config matches them (``docker.io`` and ``index.docker.io`` are one; ports count)."""
    return _normalise_key(a).lower() == _normalise_key(b).lower()


@dataclass(frozen=True)
class CredentialFiles:
    """Where stored credentials are: podman's auth.json (``auth_file``), read first, then docker's
    config.json in the ``docker_config`` folder (None: ~/.docker). The settings give them
    (``$REGISTRY_AUTH_FILE``, ``$DOCKER_CONFIG``); the default is docker's own place only."""

    auth_file: Path | None = None
    docker_config: Path | None = None

    def candidates(self) -> list[Path]:
        """The files to look in, in order."""
        docker = (self.docker_config.expanduser() if self.docker_config else Path.home() / ".docker") / "config.json"
        return [self.auth_file.expanduser(), docker] if self.auth_file else [docker]


def docker_config_path(explicit: Path | str | None = None, files: CredentialFiles = CredentialFiles()) -> Path:
    """Where credentials are read from and ``login`` writes: the explicit path (a file or a
    directory holding config.json), else the first of ``files`` (the auth file, else docker's
    config.json)."""
    if explicit:
        p = Path(explicit).expanduser()
        return p / "config.json" if p.is_dir() else p
    return files.candidates()[0]


def _candidate_files(explicit: Path | str | None, files: CredentialFiles) -> list[Path]:
    return [docker_config_path(explicit)] if explicit else files.candidates()


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuthError(f"cannot read credentials file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        raise AuthError(f"credentials file {path} is not valid JSON: fix or remove it") from None
    if not isinstance(data, dict):
        raise AuthError(f"credentials file {path} is not a JSON object: fix or remove it")
    return data


def _from_auths(auths: Mapping[str, Any], registry: str, path: Path) -> Credentials | None:
    want = _normalise_key(registry)
    for key, entry in auths.items():
        if _normalise_key(key) != want or not isinstance(entry, dict):
            continue
        where = f"{path} (auths)"
        if entry.get("identitytoken"):
            return Credentials("<token>", str(entry["identitytoken"]), True, where)
        if entry.get("auth"):
            try:
                user, sep, password = base64.b64decode(entry["auth"]).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                sep = ""
            if not sep:
                raise AuthError(f"the 'auth' entry for {registry} in {path} is not base64 of user:password: run 'ociassemble login {registry}' again")
            return Credentials(user, password, False, where)
        if entry.get("username") and entry.get("password"):
            return Credentials(str(entry["username"]), str(entry["password"]), False, where)
    return None


def _helper_exe(helper: str, path: Path) -> str:
    name = f"docker-credential-{helper}"
    exe = shutil.which(name)
    if exe is None:
        raise AuthError(f"credential helper {name} (named in {path}) is not installed: install it, or remove it from {path}")
    return exe


def _helper_get(helper: str, registry: str, path: Path) -> Credentials | None:
    exe = _helper_exe(helper, path)
    try:
        proc = subprocess.run([exe, "get"], input=server_key(registry), capture_output=True, text=True,
                              timeout=HELPER_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AuthError(f"credential helper docker-credential-{helper} failed to run ({type(exc).__name__}): check it works with 'docker-credential-{helper} list'") from None
    if proc.returncode != 0:
        # "credentials not found in native keychain" is the helper protocol's "none here"
        if "not found" in (proc.stdout + proc.stderr).lower():
            return None
        raise AuthError(f"credential helper docker-credential-{helper} exited with status {proc.returncode} for {registry}: check it works with 'docker-credential-{helper} list'")
    try:
        data = json.loads(proc.stdout)
        user, secret = str(data["Username"]), str(data["Secret"])
    except (ValueError, KeyError, TypeError):
        raise AuthError(f"credential helper docker-credential-{helper} gave an answer that is not the helper protocol's JSON") from None
    where = f"docker-credential-{helper}"
    if user == "<token>":
        return Credentials(user, secret, True, where)
    return Credentials(user, secret, False, where)


def resolve_credentials(registry: str, *, username: str | None = None, password: str | None = None,
                        config_path: Path | str | None = None,
                        files: CredentialFiles = CredentialFiles()) -> Credentials | None:
    """The credentials to use for ``registry``, or None for anonymous.

    Explicit ``username``/``password`` win; then ``config_path`` alone when given, else each
    of ``files`` in turn. Raises AuthError for a broken file or helper, or a username
    without a password.
    """
    if username or password:
        if not (username and password):
            raise UsageError("give both a username and a password (--username and --password-stdin), or neither")
        return Credentials(username, password, False, "options")
    for path in _candidate_files(config_path, files):
        data = _read_config(path)
        if data is None:
            continue
        helpers = data.get("credHelpers") or {}
        for key, helper in helpers.items():
            if _normalise_key(key) == _normalise_key(registry):
                creds = _helper_get(str(helper), registry, path)
                if creds:
                    return creds
        creds = _from_auths(data.get("auths") or {}, registry, path)
        if creds:
            return creds
        if data.get("credsStore"):
            creds = _helper_get(str(data["credsStore"]), registry, path)
            if creds:
                return creds
    return None


def store_credentials(registry: str, creds: Credentials, config_path: Path | str | None = None,
                      files: CredentialFiles = CredentialFiles()) -> Path:
    """Save credentials the way docker does, in ``config_path`` or else the first of ``files``
    (``docker_config_path``); returns the config file used.

    A credential helper named for the registry (``credHelpers``) or as the default
    (``credsStore``) stores the secret; otherwise it goes into ``auths`` as base64,
    in a file written atomically with mode 0600.
    """
    path = docker_config_path(config_path, files)
    data = _read_config(path) or {}
    helper = None
    for key, name in (data.get("credHelpers") or {}).items():
        if _normalise_key(key) == _normalise_key(registry):
            helper = str(name)
    helper = helper or data.get("credsStore")
    if helper:
        exe = _helper_exe(str(helper), path)
        payload = json.dumps({"ServerURL": server_key(registry), "Username": creds.username, "Secret": creds.password})
        try:
            proc = subprocess.run([exe, "store"], input=payload, capture_output=True, text=True,
                                  timeout=HELPER_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AuthError(f"credential helper docker-credential-{helper} failed to run ({type(exc).__name__})") from None
        if proc.returncode != 0:
            raise AuthError(f"credential helper docker-credential-{helper} could not store the credentials for {registry} (status {proc.returncode})")
        return path
    auths = data.setdefault("auths", {})
    for key in [k for k in auths if _normalise_key(k) == _normalise_key(registry)]:
        del auths[key]
    auths[server_key(registry)] = {"auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, json.dumps(data, indent="\t") + "\n", mode=0o600)
    except OSError as exc:
        raise AuthError(f"cannot write credentials to {path}: {exc.strerror}; set DOCKER_CONFIG to a writable directory") from None
    return path
