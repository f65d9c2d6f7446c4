"""The recipe's view of a build's settings: ``settings.Settings`` with the project's Azure ML v1 files read under them.

The flags, the config file and the environment are read once, into ``Settings``; this
module adds what only the scoring image needs: the v1 files (``inferenceconfig.json``,
a deployment config, a saved environment: ``v1files``) as settings the config file and
the flags go over, each replacement named in ``notes``, and the folder's requirements.txt
when nothing else names the Python packages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..image.oci import Platform
from ..image.platform import parse_platforms
from ..modelspec import ModelSpec
from ..settings import Settings

__all__ = ["Project", "ModelSpec", "project_of", "STARTER_CONFIG"]


@dataclass
class Project:
    """What the recipe builds from (``project_of``); its fields are ``Settings``' of the same name."""

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
    #: every timestamp in the image (``$SOURCE_DATE_EPOCH``); None: 0. ``epoch``
    source_date_epoch: int | None = None
    #: install azureml-defaults and the other serving-stack packages the image already provides
    install_serving_stack: bool = False
    #: the platforms to build for; () is the base's (this machine's). Two or more make a
    #: multi-platform image (an OCI image index).
    platforms: tuple[Platform, ...] = ()
    #: Debian packages added over the base, from the base's own release (``apt = ["libgomp1"]``)
    apt: list[str] = field(default_factory=list)
    #: the Debian mirror for them (default: this machine's apt sources) and its keyring
    apt_mirror: str | None = None
    apt_keyring: Path | None = None
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
    def epoch(self) -> int:
        """The build's timestamp: ``source_date_epoch``, or 0 when it is not set."""
        return self.source_date_epoch or 0

    @property
    def entry(self) -> Path:
        return self.entry_script or (self.root / "score.py")

    @property
    def src(self) -> Path:
        return self.source_dir or self.entry.parent


#: the fields ``Project`` takes from ``Settings`` as they are
_SHARED = ("root", "entry_script", "source_dir", "source_name", "requirements", "conda_file", "base", "image", "output",
           "compression", "compression_level", "source_url", "revision", "install_serving_stack",
           "platforms",
           "apt_mirror", "apt_keyring", "python", "python_source", "inference_config", "deploy_config",
           "environment", "config_file")


def project_of(settings: Settings) -> Project:
    """The recipe's view of ``settings``: the project's Azure ML v1 files (``inference_config``, default
    the folder's ``inferenceconfig.json``; ``deploy_config``, default the ``deploymentconfig.json``
    beside it; ``environment``) read first, the config file's and the flags' settings over them, each
    replacement of a config file's value named in ``notes``. With no requirements or conda file named
    anywhere and no config file, the folder's requirements.txt is used if there is one.

    Raises InputError for a v1 file that does not exist or cannot be read.
    """
    project = Project(**{name: getattr(settings, name) for name in _SHARED}, source_date_epoch=settings.epoch,
                      models=list(settings.models),
                      env=dict(settings.env), labels=dict(settings.labels), apt=list(settings.apt))
    _apply_v1_files(project, settings)
    if project.requirements is None and project.conda_file is None and project.conda_doc is None \
            and project.inference_config is None and project.config_file is None:
        default = project.root / "requirements.txt"
        if default.is_file():
            project.requirements = default
    return project


def _v1_settings(project: Project) -> Any:
    """The v1 files' settings merged (a later file wins: the inference config, then ``environment``,
    then the deployment config), or None when the project has none."""
    from .v1files import INFERENCE_CONFIG_NAMES, V1Settings, merge_settings, read_deploy_config, \
        read_inference_config, read_saved_environment

    root = project.root
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
        return None
    v1 = V1Settings()
    for part in parts:
        merge_settings(v1, part)
    return v1


def _apply_v1_files(project: Project, settings: Settings) -> None:
    """Read the project's Azure ML v1 files into it, under what the config file and the flags say."""
    v1 = _v1_settings(project)
    if v1 is None:
        return
    where = project.config_file.name if project.config_file else "the config"
    given = settings.given
    if v1.conda_file is not None or v1.conda_doc is not None:
        if "requirements" in given or "conda_file" in given:
            pass  # a flag's environment file replaces the v1 files' conda dependencies
        elif project.requirements or project.conda_file:
            project.notes.append(f"{where}'s {'requirements' if project.requirements else 'conda_file'} replaces "
                                 "the v1 files' conda dependencies")
        else:
            project.conda_file, project.conda_doc, project.conda_name = v1.conda_file, v1.conda_doc, v1.conda_name
    for name in ("entry_script", "source_dir", "base", "platforms"):
        value = getattr(v1, "platform" if name == "platforms" else name)
        if value is None:
            continue
        if name == "platforms":
            value = parse_platforms(value)
        have = getattr(project, name)
        if have and have != value:
            if name not in given:
                project.notes.append(f"{where}'s {'platform' if name == 'platforms' else name} replaces the v1 "
                                     f"files' ({getattr(v1, 'platform' if name == 'platforms' else name)})")
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
