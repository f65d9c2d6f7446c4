"""How a ``Settings`` is made: the flags' (or a program's) values over the config file's, the environment under both.

``settings.Settings.load`` and ``from_argparse`` call these; nothing else reads the
environment variables of the settings (``settings.ENV_*``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any

from .configfile import ConfigFile
from .errors import UsageError
from .image.layer import LayerSource
from .image.platform import parse_platforms
from .modelspec import ModelSpec

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["given_of", "plain_values", "settings_from"]

#: given values that are paths, relative to the caller's folder (a flag's: the shell's)
_PATHS = frozenset({"entry_script", "source_dir", "requirements", "conda_file", "apt_keyring", "inference_config",
                    "deploy_config", "environment"})
_REGISTRY = ("username", "password", "ca_cert", "insecure_registries", "auth_file", "docker_config")
_LAYER_CACHE = ("cache_repo", "cache_from", "cache_to", "no_cache_repo")
_SIGNING = ("sign_key", "sign_password", "provenance", "keyless")
_PUSH = ("no_speculative_upload",)
#: the commands whose flags describe a build (push --from and verify --key build nothing)
_BUILDING = frozenset({"build", "push", "verify", "lock"})


def _command(value: str | Sequence[str]) -> tuple[str, ...]:
    """A Cmd/Entrypoint: a JSON array or a space-separated string (as the flags give them), or a list."""
    if isinstance(value, str):
        return tuple(json.loads(value)) if value.startswith("[") else tuple(value.split())
    return tuple(value)


def _said(given: Mapping[str, Any]) -> dict[str, Any]:
    """The values actually given: None, False and empty values say nothing (an empty ``source_name`` does,
    and an empty ``password``: an empty line on stdin is the password given)."""
    out = {}
    for key, value in given.items():
        if value is None or (value is False and key != "recipe"):
            continue
        if key not in ("source_name", "password") and isinstance(value, (str, tuple, list, dict, Mapping)) \
                and not value:
            continue
        out[key] = value
    return out


def _build_values(cfg: ConfigFile, given: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """The image's and the recipe's fields: the config file's, each given value over it."""
    values = {("platforms" if k == "platform" else k): v for k, v in cfg.values.items()}
    values.pop("sign_key", None)
    values.pop("speculative_upload", None)  # the environment's too: ``_environment``
    for key, value in given.items():
        if key in _PATHS:
            values[key] = cwd / value
        elif key == "models":
            values[key] = tuple(m if isinstance(m, ModelSpec) else ModelSpec.parse(m, cwd) for m in value)
        elif key == "platforms":
            values[key] = parse_platforms(value)
        elif key in ("env", "labels"):
            values[key] = MappingProxyType({**values.get(key, {}), **value})
        elif key == "apt":
            had = tuple(values.get("apt", ()))
            values[key] = (*had, *(a for a in value if a not in had))
        elif key == "extra_layers":
            values[key] = tuple(s if isinstance(s, LayerSource) else LayerSource.parse(s) for s in value)
        elif key in ("cmd", "entrypoint"):
            values[key] = _command(value)
        elif key in ("ports", "insecure_registries"):
            values[key] = tuple(value)
        else:
            values[key] = value
    if "requirements" in given and "conda_file" not in given:
        values["conda_file"] = None
    if "conda_file" in given:
        values["requirements"] = None
    return values


def _environment(given: dict[str, Any], cfg: ConfigFile, env: Mapping[str, str]) -> dict[str, Any]:
    """The registry, layer cache and signing settings, the cache folder, the speculative upload and the
    build's timestamp: given, else the environment."""
    from .image.cache import default_cache_dir
    from .settingparts import (_CACHE_REPO_OFF, ENV_ALLOW_SECRETS, ENV_CACHE_REPO, ENV_COSIGN_PASSWORD, ENV_PASSWORD,
                               ENV_SIGN_KEY, ENV_SPECULATIVE_UPLOAD, ENV_USERNAME, LayerCacheSettings, RegistrySettings,
                               SigningSettings)

    password = given["password"] if "password" in given else (env.get(ENV_PASSWORD) or None)
    registry = RegistrySettings(given.get("username") or env.get(ENV_USERNAME) or None, password,
                                Path(given["ca_cert"]) if given.get("ca_cert") else None,
                                tuple(given.get("insecure_registries", ())), *_credential_files(given, env))
    repo, read_from, write_to = (given.get(k) for k in _LAYER_CACHE[:3])
    if not (repo or read_from or write_to):
        named = env.get(ENV_CACHE_REPO, "").strip()
        repo = None if named.lower() in _CACHE_REPO_OFF else named
    layer_cache = LayerCacheSettings(repo, read_from, write_to, bool(given.get("no_cache_repo")))
    key = given.get("sign_key") or env.get(ENV_SIGN_KEY) or None
    key_from = "--sign-key" if given.get("sign_key") else f"${ENV_SIGN_KEY}" if key else \
        "config" if cfg.values.get("sign_key") else None
    sign_password = given.get("sign_password")
    if sign_password is None and ENV_COSIGN_PASSWORD in env:  # as cosign reads it: set and empty is the empty password
        sign_password = env[ENV_COSIGN_PASSWORD].encode()
    signing = SigningSettings(Path(key) if key else cfg.values.get("sign_key"), sign_password,
                              bool(given.get("provenance")), bool(given.get("keyless")), key_from)
    allow = bool(given.get("allow_secrets")) or env.get(ENV_ALLOW_SECRETS, "").strip().lower() in ("1", "true", "yes")
    cache_dir = Path(given["cache_dir"]) if given.get("cache_dir") else default_cache_dir(env)
    if given.get("no_speculative_upload"):
        speculative = False
    elif "speculative_upload" in cfg.values:
        speculative = bool(cfg.values["speculative_upload"])
    else:
        speculative = env.get(ENV_SPECULATIVE_UPLOAD, "").strip().lower() not in ("0", "off", "false", "no")
    epoch, epoch_error = (given["source_date_epoch"], None) if "source_date_epoch" in given else _source_date_epoch(env)
    return {"registry": registry, "layer_cache": layer_cache, "signing": signing, "allow_secrets": allow,
            "cache_dir": cache_dir, "speculative_upload": speculative, "source_date_epoch": epoch,
            "source_date_epoch_error": epoch_error}


def _credential_files(given: Mapping[str, Any], env: Mapping[str, str]) -> tuple[Path | None, Path | None]:
    """Where stored registry credentials are (podman's auth file, docker's config folder): given
    (``auth_file``, ``docker_config``), else ``$REGISTRY_AUTH_FILE`` and ``$DOCKER_CONFIG`` (empty: unset)."""
    from .settingparts import ENV_DOCKER_CONFIG, ENV_REGISTRY_AUTH_FILE

    auth = given.get("auth_file") or env.get(ENV_REGISTRY_AUTH_FILE)
    docker = given.get("docker_config") or env.get(ENV_DOCKER_CONFIG)
    return (Path(auth) if auth else None), (Path(docker) if docker else None)


def _source_date_epoch(env: Mapping[str, str]) -> tuple[int | None, str | None]:
    """``$SOURCE_DATE_EPOCH`` (reproducible-builds.org): None when unset or empty. A value that is not
    a whole number of seconds, 0 or more, is kept as its one-line error, raised by ``Settings.epoch``
    only: a variable meant for builds must not stop ``inspect``, ``pull`` or ``keygen``."""
    from .settingparts import ENV_SOURCE_DATE_EPOCH

    raw = env.get(ENV_SOURCE_DATE_EPOCH, "").strip()
    if not raw:
        return None, None
    fix = "set it to a Unix time in seconds (e.g. $(git log -1 --format=%ct)), or unset it for 0 (1970-01-01)"
    try:
        value = int(raw, 10)
    except ValueError:
        return None, f"{ENV_SOURCE_DATE_EPOCH}={raw!r} is not a whole number of seconds: {fix}"
    if value < 0:
        return None, f"{ENV_SOURCE_DATE_EPOCH}={raw!r} is negative: {fix}"
    return value, None


def settings_from(cls: type[Settings], cfg: ConfigFile, given: Mapping[str, Any], cwd: Path,
                  env: Mapping[str, str], *, project: bool = True) -> Settings:
    """``cls`` (``Settings``) of the config file ``cfg``, the ``given`` values over it, ``env`` under both."""
    said = _said({k: v for k, v in given.items() if k != "secrets"})
    known = {f for f in cls.__dataclass_fields__ if f not in ("root", "config_file", "given", "secrets",
                                                                  "registry", "layer_cache", "signing")}
    unknown = sorted(set(said) - known - set(_REGISTRY) - set(_LAYER_CACHE) - set(_SIGNING) - set(_PUSH))
    if unknown:
        raise UsageError(f"unknown settings {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(known | set(_REGISTRY) | set(_LAYER_CACHE) | set(_SIGNING) | set(_PUSH)))}")
    if given.get("speculative_upload") is False:  # a program's False says something (``_said`` drops it)
        said["no_speculative_upload"] = True
    machine = _environment(said, cfg, env)
    build = {k: v for k, v in said.items() if k in known and k not in machine}
    values = _build_values(cfg, build, cwd) if project else build
    if "secrets" in given:
        values["secrets"] = given["secrets"]
    return cls(root=cfg.root, config_file=cfg.path, given=frozenset(build), **machine, **values)


def _flag_values(a: Mapping[str, Any]) -> dict[str, Any]:
    """A building command's flags as ``Settings.load``'s given values."""
    plain = a.get("plain", False)
    names_recipe = bool(a.get("entry_script") or a.get("model") or a.get("requirements") or a.get("conda_file")
                        or a.get("inference_config"))
    return {
        "entry_script": a.get("entry_script"), "source_dir": a.get("source_dir"), "source_name": a.get("source_name"),
        "models": a.get("model"), "requirements": a.get("requirements"), "conda_file": a.get("conda_file"),
        "install_serving_stack": bool(a.get("install_serving_stack")), "base": a.get("base"),
        "output": a.get("output"), "compression": a.get("compression"),
        "compression_level": a.get("compression_level"), "env": plain_values(a.get("env"), "--env"),
        "labels": plain_values(a.get("label"), "--label"), "source_url": a.get("source_url"),
        "revision": a.get("revision"), "platforms": a.get("platform"), "python": a.get("python"),
        "inference_config": a.get("inference_config"), "deploy_config": a.get("deploy_config"),
        "environment": a.get("environment"), "apt": a.get("apt_package"), "apt_mirror": a.get("apt_mirror"),
        "apt_keyring": a.get("apt_keyring"), "extra_layers": a.get("layer"), "cmd": a.get("cmd"),
        "entrypoint": a.get("entrypoint"), "ports": a.get("port"), "workdir": a.get("workdir"),
        "lock_mode": "locked" if a.get("locked") else None, "sbom": a.get("sbom", False),
        "recipe": False if plain else (True if names_recipe else None),
        "cache_repo": a.get("cache_repo"), "cache_from": a.get("cache_from"), "cache_to": a.get("cache_to"),
        "no_cache_repo": a.get("no_cache_repo", False), "allow_secrets": a.get("allow_secrets", False),
        "no_speculative_upload": a.get("no_speculative_upload", False),
    }


def given_of(args: argparse.Namespace, stdin: IO[str]) -> tuple[dict[str, Any], str | None, str | None]:
    """(the values the flags give, the project folder or None when the command builds nothing, the
    ``--config``). stdin is read here: the registry password's line, then none other."""
    a = vars(args)
    if a.get("password_stdin") and a.get("sign_key_password_stdin"):
        raise UsageError("--password-stdin and --sign-key-password-stdin both read stdin: give the registry "
                         "password in $OCIASSEMBLE_PASSWORD or the key's in $COSIGN_PASSWORD")
    given: dict[str, Any] = {
        "cache_dir": a.get("cache_dir"), "debug": a.get("debug", False), "username": a.get("username"),
        "password": stdin.readline().rstrip("\r\n") if a.get("password_stdin") else None,
        "ca_cert": a.get("ca_cert"), "insecure_registries": a.get("insecure_registry") or (),
        "sign_key": a.get("sign_key"), "provenance": a.get("provenance", False), "keyless": a.get("keyless", False),
        "sign_password": stdin.readline().rstrip("\r\n").encode() if a.get("sign_key_password_stdin") else None,
        "sbom": a.get("sbom", False),
    }
    building = a.get("command") in _BUILDING and not a.get("source") and not a.get("key")
    if not building:
        return given, None, None
    return {**given, **_flag_values(a)}, a.get("path") or ".", a.get("config")


def plain_values(values: Sequence[str] | None, flag: str) -> Mapping[str, str]:
    """``KEY=VALUE`` flags as an immutable mapping (a later key wins)."""
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = value
    return MappingProxyType(out)
