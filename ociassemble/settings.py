"""One immutable value holding every setting of a run: the flags over the config file over the environment.

Built once (``Settings.from_argparse`` for the command line, ``Settings.load`` or plain
keyword construction for a program, as twine's ``Settings``) and handed to the library's
jobs (``ociassemble.jobs``); nothing below reads flags, the config file or the settings'
environment variables again. The generic build settings live here; the Azure ML v1 files
(inferenceconfig.json, …) are the recipe's to read over them (``azureml.project.project_of``).

Example::

    settings = Settings.load(Path("my-model"), models=["my-model/model.bin"], base="oci:./base")
    result = jobs.build(settings)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from .configfile import ConfigFile, read_config
from .errors import UsageError
from .image.layer import LayerSource
from .image.oci import Platform
from .modelspec import ModelSpec
from .redact import Secrets
from .settingparts import (ENV_ALLOW_SECRETS, ENV_CACHE, ENV_CACHE_REPO, ENV_COSIGN_PASSWORD, ENV_DOCKER_CONFIG,
                           ENV_PASSWORD, ENV_REGISTRY_AUTH_FILE, ENV_SIGN_KEY, ENV_SOURCE_DATE_EPOCH, ENV_USERNAME,
                           LayerCacheSettings, RegistrySettings, SigningSettings)
from .settingsload import given_of, plain_values, settings_from

if TYPE_CHECKING:
    from .image.cache import BlobCache

__all__ = ["ENV_ALLOW_SECRETS", "ENV_CACHE", "ENV_CACHE_REPO", "ENV_COSIGN_PASSWORD", "ENV_DOCKER_CONFIG",
           "ENV_PASSWORD", "ENV_REGISTRY_AUTH_FILE", "ENV_SIGN_KEY", "ENV_SOURCE_DATE_EPOCH", "ENV_USERNAME",
           "LayerCacheSettings", "LockMode", "RegistrySettings", "Settings", "SigningSettings", "plain_values"]

LockMode = Literal["use", "locked", "off"]
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Settings:
    """Every setting of one run, typed and immutable; ``dataclasses.replace`` makes a changed copy."""

    root: Path = field(default_factory=Path.cwd)  # the project folder (the config file's, when there is one)
    config_file: Path | None = None
    #: the settings the flags (or a program) gave over the config file; the v1 files' notes name the others
    given: frozenset[str] = frozenset()
    cache_dir: Path | None = None  # None: $OCIASSEMBLE_CACHE, else ~/.cache/ociassemble (``image.cache``)
    debug: bool = False
    registry: RegistrySettings = RegistrySettings()
    layer_cache: LayerCacheSettings = LayerCacheSettings()
    signing: SigningSettings = SigningSettings()
    # -- the image ------------------------------------------------------------------
    base: str | None = None
    image: str | None = None  # where push pushes when no REF is given
    output: str | None = None
    platforms: tuple[Platform, ...] = ()  # () is the base's own (this machine's); 2+ make an index
    compression: str = "auto"
    compression_level: int | None = None  # gzip 0-12, zstd 1-19; None: the codec's default
    source_url: str | None = None
    revision: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    apt: tuple[str, ...] = ()  # Debian packages over the base, from its own release
    apt_mirror: str | None = None
    apt_keyring: Path | None = None
    extra_layers: tuple[LayerSource, ...] = ()
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    ports: tuple[str, ...] = ()
    workdir: str | None = None
    allow_secrets: bool = False
    lock_mode: LockMode = "use"
    recipe: bool | None = None  # True the scoring image, False a plain one, None: decided by the folder
    sbom: bool = False
    #: a push that builds uploads each new layer held by reference as it hashes it (one read;
    #: ``registry.speculative``); off: ``--no-speculative-upload``, the config, ``$OCIASSEMBLE_SPECULATIVE_UPLOAD=0``
    speculative_upload: bool = True
    #: every timestamp in the image (mtimes, ``created``, the SBOM's date): ``$SOURCE_DATE_EPOCH``
    #: (reproducible-builds.org), a whole number of seconds; None: not set, 0 (1970-01-01). ``epoch``
    source_date_epoch: int | None = None
    #: why ``$SOURCE_DATE_EPOCH`` could not be read (one line, with the fix); ``epoch`` raises it, so
    #: only what dates something (a build, an SBOM) stops on it
    source_date_epoch_error: str | None = field(default=None, repr=False, compare=False)
    # -- the recipe's inputs --------------------------------------------------------------
    entry_script: Path | None = None
    source_dir: Path | None = None
    source_name: str | None = None  # None: ``azureml.recipe.DEFAULT_SOURCE_NAME``
    models: tuple[ModelSpec, ...] = ()
    requirements: Path | None = None
    conda_file: Path | None = None
    install_serving_stack: bool = False
    python: str | None = None
    inference_config: Path | None = None
    deploy_config: Path | None = None
    environment: Path | None = None
    #: the credentials this run sends are collected here, for output to be cleaned of them
    secrets: Secrets = field(default_factory=Secrets, repr=False, compare=False)

    def __post_init__(self) -> None:
        """A program's lists and dicts kept as the immutable kinds the fields name (nothing shared with the caller)."""
        for name in ("env", "labels"):
            value = getattr(self, name)
            if not isinstance(value, MappingProxyType):
                object.__setattr__(self, name, MappingProxyType(dict(value)))
        for name in ("platforms", "apt", "extra_layers", "ports", "models"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("cmd", "entrypoint"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise UsageError(f"{name} {value!r}: give a list of strings, e.g. [\"/bin/sh\", \"-c\", \"...\"] "
                                 "(Settings.load reads a string as the flag does)")
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        sde = self.source_date_epoch
        if sde is not None and (type(sde) is not int or sde < 0):
            raise UsageError(f"source_date_epoch {sde!r}: give a whole number of seconds, 0 or more (a Unix time), "
                             "or None for 0")

    @property
    def epoch(self) -> int:
        """The build's timestamp: ``source_date_epoch``, or 0 when it is not set.

        Raises UsageError for a ``$SOURCE_DATE_EPOCH`` that is not a Unix time."""
        if self.source_date_epoch_error is not None:
            raise UsageError(self.source_date_epoch_error)
        return self.source_date_epoch or 0

    @property
    def python_source(self) -> str | None:
        """Where ``python`` was set, for messages: ``--python`` or the config file's name."""
        if self.python is None:
            return None
        return "--python" if "python" in self.given or self.config_file is None else self.config_file.name

    @classmethod
    def load(cls, directory: Path | str = ".", *, config: Path | str | None = None, cwd: Path | None = None,
             environ: Mapping[str, str] | None = None, **given: Any) -> Settings:
        """The settings of the project at ``directory``: its config file, then ``given`` over it, and the
        environment where neither says (``given`` are flag values: ``models=["m.pkl:name:1"]``, paths
        relative to ``cwd``, default the current folder, as a flag's are the shell's).

        Raises UsageError for a folder that is not one, an unknown setting or a bad value.
        """
        root = Path(directory)
        if not root.is_dir():
            raise UsageError(f"{root} is not a folder: give the project folder (default: .)")
        cfg = read_config(root, Path(config) if config else None)
        env = os.environ if environ is None else environ
        return settings_from(cls, cfg, given, cwd or Path.cwd(), env)

    @classmethod
    def from_argparse(cls, args: argparse.Namespace, *, environ: Mapping[str, str] | None = None,
                      secrets: Secrets | None = None) -> Settings:
        """The settings of a parsed command line (``cli.parser``): stdin is read here, once, for
        ``--password-stdin`` and ``--sign-key-password-stdin``. A command that builds nothing reads no
        config file."""
        given, directory, config = given_of(args, sys.stdin)
        if secrets is not None:
            given["secrets"] = secrets
        if directory is None:
            return cls.load_environment(environ=environ, **given)
        return cls.load(directory, config=config, environ=environ, **given)

    @classmethod
    def load_environment(cls, *, environ: Mapping[str, str] | None = None, **given: Any) -> Settings:
        """Settings with no project (pull, inspect, run, push --from): the environment and ``given``."""
        env = os.environ if environ is None else environ
        return settings_from(cls, ConfigFile(Path.cwd()), given, Path.cwd(), env, project=False)

    @property
    def cache_root(self) -> Path:
        """The blob cache's folder: ``cache_dir``, else ``image.cache.default_cache_dir`` (not made here)."""
        from .image.cache import default_cache_dir

        return self.cache_dir or default_cache_dir()

    def blob_cache(self) -> BlobCache:
        """The blob cache these settings name (``image.cache.BlobCache``), its folder made if missing."""
        from .image.cache import BlobCache

        return BlobCache(self.cache_root)
