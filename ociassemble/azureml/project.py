"""The project's settings: ``ociassemble.toml`` or ``[tool.ociassemble]`` in pyproject.toml,
with every key overridable by a CLI flag.

Relative paths in a config file are relative to that file's folder, so a build
gives the same image from wherever it is started.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InputError, UsageError

__all__ = ["Project", "ModelSpec", "load_project", "project_with", "STARTER_CONFIG"]


@dataclass(frozen=True)
class ModelSpec:
    """A model file or folder, served at ``azureml-models/<name>/<version>/<its own name>``."""

    path: Path
    name: str
    version: str = "1"

    @classmethod
    def parse(cls, value: Any, root: Path) -> "ModelSpec":
        if isinstance(value, dict):
            if "path" not in value:
                raise UsageError(f"model entry {value!r} needs a 'path'")
            path = root / str(value["path"])
            return cls(path, str(value.get("name") or _default_name(path)), str(value.get("version", "1")))
        text = str(value)
        # PATH[:NAME[:VERSION]]
        parts = text.split(":")
        path = root / parts[0]
        name = parts[1] if len(parts) > 1 and parts[1] else _default_name(path)
        version = parts[2] if len(parts) > 2 and parts[2] else "1"
        return cls(path, name, version)


def _default_name(path: Path) -> str:
    return path.name.split(".")[0] or "model"


@dataclass
class Project:
    root: Path = field(default_factory=Path.cwd)
    entry_script: Path | None = None
    source_dir: Path | None = None
    #: the source folder's name under the app root; None: ``DEFAULT_SOURCE_NAME`` (never the
    #: checkout folder's own name, which would make the digest depend on where it sits)
    source_name: str | None = None
    models: list[ModelSpec] = field(default_factory=list)
    requirements: Path | None = None
    conda_file: Path | None = None
    base: str | None = None
    image: str | None = None
    output: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    compression: str = "auto"
    #: gzip 0-12 (libdeflate), zstd 1-19; None: the codec's default (checked by Compression.parse)
    compression_level: int | None = None
    source_url: str | None = None
    revision: str | None = None
    #: install azureml-defaults and the other serving-stack packages the image already provides
    install_serving_stack: bool = False
    #: the platforms to build for, a comma list ("linux/amd64,linux/arm64"); None: the base's
    #: (this machine's). Two or more make a multi-platform image (an OCI image index).
    platform: str | None = None
    #: Debian packages added over the base, from the base's own release (``apt = ["libgomp1"]``)
    apt: list[str] = field(default_factory=list)
    #: the Debian mirror for them (default: this machine's apt sources) and its keyring
    apt_mirror: str | None = None
    apt_keyring: Path | None = None
    #: push signs with this key (cosign.key or a PEM ECDSA P-256 key) unless a flag says otherwise
    sign_key: Path | None = None
    #: a push that builds uploads a new model layer as it hashes it (one read; registry.speculative)
    speculative_upload: bool = True
    #: the Python the image must have ("3.9"), which picks the default base (azureml.pythonpin)
    python: str | None = None
    #: Azure ML v1 files read into these settings (azureml.v1files): an inference config
    #: (default: the folder's inferenceconfig.json), a deployment config, a saved environment
    inference_config: Path | None = None
    deploy_config: Path | None = None
    environment: Path | None = None
    config_file: Path | None = None
    #: set from v1 files only: an Environment's inline conda dependencies and their name in
    #: messages; userManagedDependencies (install none of them); what the build should say
    conda_doc: dict[str, Any] | None = None
    conda_name: str | None = None
    user_managed_dependencies: bool = False
    #: where ``python`` was set ("--python", the config file's name), for messages
    python_source: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def entry(self) -> Path:
        return self.entry_script or (self.root / "score.py")

    @property
    def src(self) -> Path:
        return self.source_dir or self.entry.parent


_PATH_KEYS = {"entry_script", "source_dir", "requirements", "conda_file", "apt_keyring", "sign_key", "inference_config",
              "deploy_config", "environment"}
_STR_KEYS = {"base", "image", "output", "compression", "source_url", "revision", "source_name", "apt_mirror"}
#: Project fields no config file sets (the v1 files and the build fill them)
_NOT_CONFIG = {"root", "config_file", "conda_doc", "conda_name", "user_managed_dependencies", "python_source", "notes"}


def _apply(project: Project, data: dict[str, Any], root: Path, where: str) -> None:
    known = {f.name for f in fields(Project)} - _NOT_CONFIG
    for key, value in data.items():
        k = key.replace("-", "_")
        if k not in known:
            raise UsageError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(known))}")
        if k in _PATH_KEYS:
            setattr(project, k, (root / str(value)) if value else None)
        elif k in _STR_KEYS:
            setattr(project, k, str(value) if value is not None else None)
        elif k == "models":
            items = value if isinstance(value, list) else [value]
            project.models = [ModelSpec.parse(v, root) for v in items]
        elif k == "compression_level":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise UsageError(f"{where}: compression_level must be a whole number, e.g. compression_level = 1")
            project.compression_level = value
        elif k == "speculative_upload":
            if not isinstance(value, bool):
                raise UsageError(f"{where}: speculative_upload must be true or false")
            project.speculative_upload = value
        elif k == "install_serving_stack":
            if not isinstance(value, bool):
                raise UsageError(f"{where}: install_serving_stack must be true or false")
            project.install_serving_stack = value
        elif k == "platform":
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(v, str) and v.strip() for v in items) or not items:
                raise UsageError(f'{where}: platform must be a string or a list of them, e.g. platform = ["linux/amd64", "linux/arm64"]')
            project.platform = ",".join(items)
        elif k == "python":
            if not isinstance(value, str) or not value.strip():
                raise UsageError(f'{where}: python must be a version string, e.g. python = "3.9"')
            project.python, project.python_source = value.strip(), Path(where).name
        elif k == "apt":
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(v, str) and v.strip() for v in items):
                raise UsageError(f'{where}: apt must be a list of Debian package names, e.g. apt = ["libgomp1"]')
            project.apt = [v.strip() for v in items]
        elif k in ("env", "labels"):
            if not isinstance(value, dict):
                raise UsageError(f"{where}: {key} must be a table of strings, e.g. {key} = {{ KEY = \"value\" }}")
            setattr(project, k, {str(a): str(b) for a, b in value.items()})


def load_project(directory: Path, config: Path | None = None) -> Project:
    """The project rooted at ``directory``: its config file if there is one, else defaults.

    ``base`` and ``image`` strings are kept as written (they may be references).
    """
    project = Project(root=directory)
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
        root = path.parent
        project.root = root
        project.config_file = path
        _apply(project, data, root, str(path))
        break
    if not project.models and project.config_file is None:
        project.models = []
    return project


def project_with(directory: Path, *, config: Path | None = None, cwd: Path | None = None,
                 entry_script: str | Path | None = None, source_dir: str | Path | None = None,
                 source_name: str | None = None, models: Sequence[str] = (),
                 requirements: str | Path | None = None, conda_file: str | Path | None = None,
                 install_serving_stack: bool = False, base: str | None = None, output: str | None = None,
                 compression: str | None = None, compression_level: int | None = None,
                 env: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None,
                 source_url: str | None = None, revision: str | None = None,
                 platform: str | None = None, python: str | None = None,
                 inference_config: str | Path | None = None, deploy_config: str | Path | None = None,
                 environment: str | Path | None = None, apt: Sequence[str] = (), apt_mirror: str | None = None,
                 apt_keyring: str | Path | None = None) -> Project:
    """The project of ``directory`` (``load_project``) with these settings put over its config.

    What the CLI's flags do, for a program: a value given wins over the config file's;
    relative paths are relative to ``cwd`` (default: the current folder), as a flag's are;
    ``models`` are ``PATH[:NAME[:VERSION]]``. With no requirements or conda file named
    anywhere and no config file, the folder's requirements.txt is used if there is one.

    Azure ML v1 files (``inference_config``, default the folder's ``inferenceconfig.json``;
    ``deploy_config``, default ``deploymentconfig.json`` beside it; ``environment``, a saved
    environment's folder) are read first: the config file and these settings go over them,
    each replacement named in ``project.notes``.
    """
    root = Path(directory)
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder: give the project folder (default: .)")
    project = load_project(root, Path(config) if config else None)
    cwd = cwd or Path.cwd()
    if inference_config:
        project.inference_config = cwd / inference_config
    if deploy_config:
        project.deploy_config = cwd / deploy_config
    if environment:
        project.environment = cwd / environment
    _apply_v1_files(project, root)
    if entry_script:
        project.entry_script = cwd / entry_script
    if source_dir:
        project.source_dir = cwd / source_dir
    if source_name is not None:
        project.source_name = source_name
    if models:
        project.models = [ModelSpec.parse(m, cwd) for m in models]
    if requirements:
        project.requirements, project.conda_file = cwd / requirements, None
    if conda_file:
        project.conda_file, project.requirements = cwd / conda_file, None
    if conda_file or requirements:
        project.conda_doc = None
    if project.requirements is None and project.conda_file is None and requirements is None \
            and project.conda_doc is None and project.inference_config is None:
        default = project.root / "requirements.txt"
        if default.is_file() and project.config_file is None:
            project.requirements = default
    if install_serving_stack:
        project.install_serving_stack = True
    for key, value in (("base", base), ("output", output), ("compression", compression),
                       ("source_url", source_url), ("revision", revision), ("platform", platform)):
        if value:
            setattr(project, key, value)
    if compression_level is not None:
        project.compression_level = compression_level
    if python:
        project.python, project.python_source = python, "--python"
    project.apt = [*project.apt, *(a for a in apt if a not in project.apt)]
    if apt_mirror:
        project.apt_mirror = apt_mirror
    if apt_keyring:
        project.apt_keyring = cwd / apt_keyring
    project.env.update(env or {})
    project.labels.update(labels or {})
    return project


def _apply_v1_files(project: Project, root: Path) -> None:
    """Read the project's Azure ML v1 files into it, under what its config file says."""
    from .v1files import INFERENCE_CONFIG_NAMES, V1Settings, merge_settings, read_deploy_config, \
        read_inference_config, read_saved_environment

    if project.inference_config is None:
        project.inference_config = next((root / n for n in INFERENCE_CONFIG_NAMES if (root / n).is_file()), None)
    if project.inference_config is not None and project.deploy_config is None:
        beside = project.inference_config.parent / "deploymentconfig.json"
        project.deploy_config = beside if beside.is_file() else None
    parts: list[V1Settings] = []
    for path, read in ((project.inference_config, read_inference_config), (project.environment, read_saved_environment),
                       (project.deploy_config, read_deploy_config)):
        if path is None:
            continue
        if not path.exists():
            raise InputError(f"{path} does not exist: check the path of the Azure ML v1 file")
        parts.append(read(path))
    if not parts:
        return
    v1 = V1Settings()
    for part in parts:  # a later file wins: the inference config, then --environment, then the deployment config
        merge_settings(v1, part)
    where = project.config_file.name if project.config_file else "the config"
    if v1.conda_file is not None or v1.conda_doc is not None:
        if project.requirements or project.conda_file:
            project.notes.append(f"{where}'s {'requirements' if project.requirements else 'conda_file'} replaces "
                                 "the v1 files' conda dependencies")
        else:
            project.conda_file, project.conda_doc, project.conda_name = v1.conda_file, v1.conda_doc, v1.conda_name
    for name in ("entry_script", "source_dir", "base", "platform"):
        value = getattr(v1, name)
        if value is None:
            continue
        if getattr(project, name) is not None and getattr(project, name) != value:
            project.notes.append(f"{where}'s {name} replaces the v1 files' ({value})")
        else:
            setattr(project, name, value)
    project.user_managed_dependencies = v1.user_managed
    project.apt = [*v1.apt, *(a for a in project.apt if a not in v1.apt)]
    project.env = {**v1.env, **project.env}
    project.labels = {**v1.labels, **project.labels}
    project.notes.extend(v1.notes)


STARTER_CONFIG = """\
# ociassemble.toml: how to build this folder's scoring image. Every key can be
# overridden on the command line (see `ociassemble build --help`); paths are
# relative to this file.

# The scoring script: defines init() (once per worker) and run(data) (per request).
entry_script = "score.py"

# The folder shipped with it (its sibling modules import normally). Default: the
# entry script's folder.
# source_dir = "src"

# Its folder in the image: /var/azureml-app/<source_name>/ (AZUREML_ENTRY_SCRIPT is
# <source_name>/<entry script>). Default: "src", wherever this checkout sits.
# source_name = "src"

# Model files or folders, each kept under its own name in
# /var/azureml-app/azureml-models/<name>/<version>/ (as Azure ML does): with one model,
# score.py reads os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model.pkl").
# "PATH[:NAME[:VERSION]]" or a table.
models = [
    "model.pkl",
    # { path = "models/encoder", name = "encoder", version = "2" },
]

# Python packages for run(): a requirements.txt, or a conda file (its pip list and
# the conda packages PyPI also has), merged with the scoring server's own.
requirements = "requirements.txt"
# conda_file = "myenv.yml"
# azureml-defaults, azureml-inference-server-http and azureml-contrib-services are
# provided by the image and not installed; true installs them anyway.
# install_serving_stack = false

# The base image: a Debian-like image with python3, nginx and runit.
# `ociassemble make-base` builds one; default: that one.
# base = "oci:/path/to/base"

# The image's Python, which picks the default base: "3.9" (Debian bullseye), "3.11"
# (bookworm) or "3.13" (trixie); `ociassemble make-base --python 3.9` makes it.
# Default: the conda file's python= pin, else "3.11".
# python = "3.11"

# An Azure ML v1 project's files are read as they are (docs/azureml-v1.md):
# inferenceconfig.json in this folder, the deploymentconfig.json beside it.
# inference_config = "inferenceconfig.json"
# deploy_config = "deploymentconfig.json"

# The platforms to build for: one, or several for a multi-platform image (an OCI
# index; each platform's base from `ociassemble make-base --platform ...`).
# Default: the base's (this machine's).
# platform = ["linux/amd64", "linux/arm64"]

# Debian packages the model needs from the system (lightgbm's wheel needs libgomp1),
# from the base's own release; their dependencies come too. Default: none.
# apt = ["libgomp1"]

# Where `ociassemble build` writes, and where `ociassemble push` pushes.
output = "oci-archive:image.tar"
# image = "registry.example.com/team/my-model:1.0"

# Extra environment for the scoring process.
# env = { WORKER_COUNT = "2", AZUREML_LOG_LEVEL = "DEBUG" }
"""
