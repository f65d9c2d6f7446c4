"""Azure ML v1 project files as build inputs: ``inferenceconfig.json``, an Environment
(inline, or a folder as ``az ml environment scaffold``/``download`` and
``Environment.save_to_directory`` write it) and ``deploymentconfig.json``.

Each key is either used (it becomes a project setting or image Env), named in a note
as not part of an image (compute-side settings: cpu, memory, replicas, auth), or, when
it would change the image and is not supported, refused in one line naming it. A key
this reader does not know is refused too: a v1 file is never half read.

Paths follow the az CLI: ``sourceDirectory`` is relative to the inference config's
folder, and ``entryScript``, ``condaFile`` and ``extraDockerfileSteps`` are relative to
``sourceDirectory`` (to the config's folder without one).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["V1Settings", "merge_settings", "read_inference_config", "read_environment", "read_saved_environment", "read_deploy_config",
           "INFERENCE_CONFIG_NAMES", "ENVIRONMENT_FILE"]

#: the names a project folder's inference config is found under
INFERENCE_CONFIG_NAMES = ("inferenceconfig.json", "inferenceconfig.yml", "inferenceconfig.yaml")
#: what ``Environment.save_to_directory`` and ``az ml environment scaffold`` write
ENVIRONMENT_FILE = "azureml_environment.json"
_ENV_CONDA_FILE = "conda_dependencies.yml"
_ENV_DOCKERFILE = "BaseDockerfile"
#: Azure ML's own default base images (what the SDK and the scaffold fill in when no base
#: was chosen): training images without nginx or runit, never a choice for this image
_AZUREML_DEFAULT_BASE = re.compile(r"^(mcr\.microsoft\.com/)?azureml/(base(-gpu)?|intelmpi[^/:]*|openmpi[^/:]*)(:.*)?$")
#: the label an inference config's description becomes
DESCRIPTION_LABEL = "org.opencontainers.image.description"


@dataclass
class V1Settings:
    """What v1 files say about the image, as project settings (None: not said)."""

    entry_script: Path | None = None
    source_dir: Path | None = None
    conda_file: Path | None = None
    #: an Environment's inline ``python.condaDependencies`` (a conda document), and its name for messages
    conda_doc: dict[str, Any] | None = None
    conda_name: str | None = None
    #: ``python.userManagedDependencies``: the conda dependencies are not installed
    user_managed: bool = False
    base: str | None = None
    platform: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    #: Debian packages extraDockerfileSteps' ``RUN apt-get install`` lines name (the project's ``apt``)
    apt: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _read_doc(path: Path, what: str) -> dict[str, Any]:
    """A JSON (or, as the az CLI also takes, YAML) object; InputError in one line otherwise."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from None
    if path.suffix in (".yml", ".yaml"):
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"{path.name} is not valid YAML: {str(exc).splitlines()[0]}") from None
    else:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{path.name} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path.name}: expected a JSON object of settings, e.g. {{\"entryScript\": \"score.py\"}}")
    return doc


def _unknown(where: str, data: dict[str, Any], known: set[str], what: str) -> None:
    extra = sorted(k for k in data if k not in known)
    if extra:
        raise InputError(f"{where}: unknown {what} key {extra[0]!r} (known: {', '.join(sorted(known))}); "
                         "remove it or fix its spelling")


def _str(where: str, key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InputError(f"{where}: {key} must be a string, not {value!r}")
    return value


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {} or value is False


def _docker_steps(path: Path, where: str, key: str) -> list[str]:
    """The Debian packages the extra Docker steps install (``dockersteps``: ``RUN apt-get install``
    lines); InputError naming the file and the first step that is anything else."""
    from ..errors import UsageError
    from .dockersteps import apt_from_dockerfile_steps

    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"{where}: {key} {path} cannot be read ({exc.strerror})") from None
    try:
        return apt_from_dockerfile_steps(text)
    except UsageError as exc:
        raise InputError(f"{where}: {key} ({path.name}): {str(exc).removeprefix('extraDockerfileSteps: ')}") from None


def _registry_base(image: str, registry: Any, where: str, key: str, notes: list[str]) -> str:
    """``baseImage`` with its ``baseImageRegistry`` address in front, unless it already names a host."""
    address: str | None = None
    if isinstance(registry, str):
        address = registry or None
    elif isinstance(registry, dict):
        _unknown(where, registry, {"address", "username", "password", "registryIdentity"}, key)
        address = _str(where, f"{key}.address", registry.get("address"))
        if registry.get("username") or registry.get("password") or registry.get("registryIdentity"):
            notes.append(f"{where}: {key} credentials are not read from the file: run 'ociassemble login "
                         f"{address or 'REGISTRY'}' (or set OCIASSEMBLE_USERNAME/OCIASSEMBLE_PASSWORD) to pull the base")
    elif registry is not None:
        raise InputError(f"{where}: {key} must be an object {{\"address\": ...}}, not {registry!r}")
    first = image.split("/", 1)[0]
    has_host = "/" in image and ("." in first or ":" in first or first == "localhost")
    return f"{address.rstrip('/')}/{image}" if address and not has_host else image


def _base(image: str | None, registry: Any, where: str, key: str, out: V1Settings) -> None:
    if image is None:
        return
    if _AZUREML_DEFAULT_BASE.match(image):
        out.notes.append(f"{where}: {key} {image} is Azure ML's default training base (no nginx or runit): the "
                         "default Debian base for the pinned Python is used instead (--base chooses another)")
        return
    out.base = _registry_base(image, registry, where, key.replace("baseImage", "baseImageRegistry"), out.notes)


# --- the Environment -------------------------------------------------------------------

_ENV_KEYS = {"name", "version", "environmentVariables", "python", "docker", "spark", "databricks", "r",
             "inferencingStackVersion", "assetId"}
_PYTHON_KEYS = {"userManagedDependencies", "interpreterPath", "condaDependencies", "condaDependenciesFile",
                "baseCondaEnvironment"}
_DOCKER_KEYS = {"enabled", "baseImage", "baseDockerfile", "buildContext", "sharedVolumes", "shmSize", "arguments",
                "baseImageRegistry", "platform", "gpuSupport"}
_SPARK_KEYS = {"repositories", "packages", "precachePackages"}
_DATABRICKS_KEYS = {"mavenLibraries", "pypiLibraries", "rcranLibraries", "jarLibraries", "eggLibraries"}
#: interpreters that are the image's own python3
_OWN_PYTHON = {None, "", "python", "python3", "/usr/bin/python3", "/usr/bin/python"}


def _env_vars(where: str, key: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{where}: {key} must be an object of names and values, not {value!r}")
    return {str(k): "" if v is None else (json.dumps(v) if isinstance(v, bool) else str(v)) for k, v in value.items()}


def read_environment(doc: dict[str, Any], where: str, folder: Path | None = None,
                     relative_to: Path | None = None) -> V1Settings:
    """An Azure ML Environment (``azureml_environment.json``'s object, or an inference config's
    inline ``environment``). ``folder``: the saved environment's folder, whose
    ``conda_dependencies.yml`` (and ``BaseDockerfile``) ``Environment.load_from_directory`` reads too;
    ``relative_to``: what a ``python.condaDependenciesFile`` path is relative to (default ``folder``)."""
    out = V1Settings()
    _unknown(where, doc, _ENV_KEYS, "environment")
    w = where
    not_image = [k for k in ("name", "version", "assetId") if doc.get(k) is not None]
    out.env.update(_env_vars(w, "environmentVariables", doc.get("environmentVariables")))
    _read_env_python(doc.get("python") or {}, w, folder, relative_to, out)
    run_only = _read_env_docker(doc.get("docker") or {}, w, folder, out)
    _refuse_other_stacks(doc, w)
    if out.user_managed:
        out.notes.append(f"{w}: python.userManagedDependencies is true: as in Azure ML, none of the environment's "
                         "conda or pip packages are installed (the base must already have what score.py imports); "
                         "only the scoring server's own packages are")
    if not_image or run_only:
        out.notes.append(f"{w}: {', '.join(not_image + run_only)} not part of an image (names, and how Azure ML "
                         "runs training containers)")
    return out


def _read_env_python(python: Any, w: str, folder: Path | None, relative_to: Path | None, out: V1Settings) -> None:
    """An environment's ``python`` section into ``out``: the conda packages (inline, a file, or
    the saved folder's), whether they are user-managed; refuses another interpreter or a base conda env."""
    if not isinstance(python, dict):
        raise InputError(f"{w}: python must be an object, not {python!r}")
    _unknown(w, python, _PYTHON_KEYS, "python")
    out.user_managed = bool(python.get("userManagedDependencies"))
    interpreter = python.get("interpreterPath")
    if interpreter not in _OWN_PYTHON:
        raise InputError(f"{w}: python.interpreterPath {interpreter!r} is not supported: the scoring server runs the "
                         "image's python3; drop the key, or use a base whose python3 is that interpreter")
    if python.get("baseCondaEnvironment"):
        raise InputError(f"{w}: python.baseCondaEnvironment is not supported (no conda in the image): list its "
                         "packages in condaDependencies instead")
    inline = python.get("condaDependencies")
    conda_file = _str(w, "python.condaDependenciesFile", python.get("condaDependenciesFile"))
    saved = folder / _ENV_CONDA_FILE if folder is not None else None
    if inline is not None:
        if not isinstance(inline, dict):
            raise InputError(f"{w}: python.condaDependencies must be a conda environment object, not {inline!r}")
        out.conda_doc, out.conda_name = inline, f"{w} python.condaDependencies"
    elif conda_file is not None:
        out.conda_file = (relative_to or folder or Path.cwd()) / conda_file
    elif saved is not None and saved.is_file():
        out.conda_file = saved


def _read_env_docker(docker: Any, w: str, folder: Path | None, out: V1Settings) -> list[str]:
    """An environment's ``docker`` section into ``out`` (the base image, the platform); refuses
    a Dockerfile or build context. Returns the keys set that only say how Azure ML runs a container."""
    if not isinstance(docker, dict):
        raise InputError(f"{w}: docker must be an object, not {docker!r}")
    _unknown(w, docker, _DOCKER_KEYS, "docker")
    dockerfile = docker.get("baseDockerfile") or (
        (folder / _ENV_DOCKERFILE).read_text() if folder is not None and (folder / _ENV_DOCKERFILE).is_file() else None)
    if dockerfile:
        steps = [l.strip() for l in str(dockerfile).splitlines() if l.strip() and not l.strip().startswith("#")]
        raise InputError(f"{w}: docker.baseDockerfile ({steps[0] if steps else 'empty'!r}…) is not supported: a "
                         "Dockerfile needs a Docker build; build that image and pass it as --base, or drop the key")
    if docker.get("buildContext"):
        raise InputError(f"{w}: docker.buildContext is not supported: build that image with Docker and pass it as "
                         "--base, or drop the key")
    _base(_str(w, "docker.baseImage", docker.get("baseImage")), docker.get("baseImageRegistry"), w,
          "docker.baseImage", out)
    plat = docker.get("platform")
    if isinstance(plat, dict):
        _unknown(w, plat, {"os", "architecture"}, "docker.platform")
        if plat.get("os") and str(plat["os"]).lower() != "linux":
            raise InputError(f"{w}: docker.platform.os {plat['os']!r} is not supported: images here are Linux")
        if plat.get("architecture"):
            out.platform = f"linux/{str(plat['architecture']).lower()}"
    elif plat is not None:
        raise InputError(f"{w}: docker.platform must be an object {{\"os\": \"Linux\", \"architecture\": \"amd64\"}}")
    return [f"docker.{k}" for k in ("enabled", "sharedVolumes", "shmSize", "arguments", "gpuSupport")
            if not _empty(docker.get(k)) and not (k == "sharedVolumes" and docker.get(k) is True)
            and not (k == "shmSize" and docker.get(k) == "2g")]


def _refuse_other_stacks(doc: dict[str, Any], w: str) -> None:
    """Refuse what an environment may ask for beyond a Python scoring image: Spark, Databricks,
    R, another inferencing stack (their keys may be present, empty)."""
    for section, keys in (("spark", _SPARK_KEYS), ("databricks", _DATABRICKS_KEYS)):
        value = doc.get(section) or {}
        if not isinstance(value, dict):
            raise InputError(f"{w}: {section} must be an object, not {value!r}")
        _unknown(w, value, keys, section)
        used = [k for k in sorted(keys) if k != "precachePackages" and not _empty(value.get(k))]
        if used:
            raise InputError(f"{w}: {section}.{used[0]} is not supported: this image serves Python only (no "
                             f"{'Spark' if section == 'spark' else 'Databricks'}); drop it")
    if doc.get("r"):
        raise InputError(f"{w}: r is not supported: this image serves Python only; drop the r section")
    stack = doc.get("inferencingStackVersion")
    if stack not in (None, "", "latest"):
        raise InputError(f"{w}: inferencingStackVersion {stack!r} is not supported: the image always has its own "
                         "scoring server (\"latest\" or null)")


def _environment_at(path: Path, where: str) -> tuple[dict[str, Any], Path]:
    """A saved environment: its folder (azureml_environment.json inside) or that file."""
    file = path / ENVIRONMENT_FILE if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"{where}: environment {path} has no {ENVIRONMENT_FILE}: give the folder "
                         "'az ml environment scaffold' or Environment.save_to_directory wrote, or that file")
    return _read_doc(file, "environment file"), file.parent


def read_saved_environment(path: Path) -> V1Settings:
    """An environment folder (or its ``azureml_environment.json``) given on its own (``--environment``)."""
    doc, folder = _environment_at(path, str(path))
    return read_environment(doc, ENVIRONMENT_FILE if path.is_dir() else path.name, folder)


# --- inferenceconfig.json -----------------------------------------------------------------

_IC_KEYS = {"entryScript", "sourceDirectory", "runtime", "condaFile", "extraDockerfileSteps", "extraDockerFileSteps",
            "enableGpu", "cudaVersion", "baseImage", "baseImageRegistry", "description", "schemaFile", "dependencies",
            "environment"}
#: the keys an inline environment replaces (the SDK refuses both)
_ENV_EXCLUSIVE = ("runtime", "condaFile", "extraDockerfileSteps", "extraDockerFileSteps", "enableGpu", "cudaVersion",
                  "baseImage", "baseImageRegistry")


def read_inference_config(path: Path) -> V1Settings:
    """``inferenceconfig.json`` (or .yml): the entry script, source folder, environment and base."""
    doc = _read_doc(path, "inference config")
    where = path.name
    _unknown(where, doc, _IC_KEYS, "inference config")
    root = path.parent
    src = _str(where, "sourceDirectory", doc.get("sourceDirectory"))
    source = (root / src) if src else None
    rel = source or root
    out = V1Settings(source_dir=source)
    entry = _str(where, "entryScript", doc.get("entryScript"))
    if entry is None:
        raise InputError(f"{where}: entryScript is missing: name the scoring script, e.g. \"entryScript\": \"score.py\"")
    out.entry_script = rel / entry

    env = doc.get("environment")
    if env is not None:
        given = [k for k in _ENV_EXCLUSIVE if not _empty(doc.get(k)) and not (k == "runtime" and doc[k] == "python")]
        if given:
            raise InputError(f"{where}: give either environment or {given[0]}, not both (as Azure ML requires): move "
                             f"it into the environment")
        if isinstance(env, str):  # a saved environment's folder or file, relative to the config
            env_doc, folder = _environment_at(root / env, where)
            sub = read_environment(env_doc, f"{where} environment {env}", folder)
        elif isinstance(env, dict):
            sub = read_environment(env, f"{where} environment", None, relative_to=rel)
        else:
            raise InputError(f"{where}: environment must be an Environment object or a saved environment's folder")
        merge_settings(out, sub)

    runtime = _str(where, "runtime", doc.get("runtime"))
    if runtime is not None and runtime.lower() != "python":
        if runtime.lower() == "spark-py":
            raise InputError(f"{where}: runtime spark-py is not supported: this image serves Python scoring scripts "
                             "(\"runtime\": \"python\")")
        raise InputError(f"{where}: runtime {runtime!r} is unknown: Azure ML's runtimes are python and spark-py")
    conda = _str(where, "condaFile", doc.get("condaFile"))
    if conda is not None:
        out.conda_file = rel / conda
    for key in ("extraDockerfileSteps", "extraDockerFileSteps"):
        steps = _str(where, key, doc.get(key))
        if steps is not None:
            packages = _docker_steps(rel / steps, where, key)
            out.apt += [p for p in packages if p not in out.apt]
            out.notes.append(f"{where}: {key} ({steps}) installs {', '.join(packages) or 'no package'} in the "
                             "Debian packages layer (as apt = [...] would)")
    if doc.get("enableGpu"):
        raise InputError(f"{where}: enableGpu is not supported: the default bases have no CUDA; drop it (or set "
                         "it false), or pass --base a CUDA image with python3, nginx and runit")
    if doc.get("cudaVersion") not in (None, ""):
        raise InputError(f"{where}: cudaVersion {doc['cudaVersion']!r} is not supported: the default bases have no "
                         "CUDA; drop it, or pass --base a CUDA image with python3, nginx and runit")
    _base(_str(where, "baseImage", doc.get("baseImage")), doc.get("baseImageRegistry"), where, "baseImage", out)
    if doc.get("baseImage") is None and doc.get("baseImageRegistry"):
        raise InputError(f"{where}: baseImageRegistry without baseImage: name the image too, or drop the key")
    description = _str(where, "description", doc.get("description"))
    if description is not None:
        out.labels[DESCRIPTION_LABEL] = description
    if doc.get("schemaFile"):
        raise InputError(f"{where}: schemaFile ({doc['schemaFile']}) is not supported: the swagger document comes "
                         "from run()'s inference-schema decorators (@input_schema/@output_schema); drop the key")
    deps = doc.get("dependencies")
    if deps:
        if not isinstance(deps, list):
            raise InputError(f"{where}: dependencies must be a list of files, not {deps!r}")
        folder = (source or out.entry_script.parent).resolve()
        for d in deps:
            dep = (rel / str(d)).resolve()
            if not dep.is_relative_to(folder):
                raise InputError(f"{where}: dependency {d} is outside the source folder {folder}: move it into "
                                 "sourceDirectory (the whole folder is shipped), or drop it")
        out.notes.append(f"{where}: dependencies are inside the source folder, which is shipped whole")
    return out


def merge_settings(out: V1Settings, sub: V1Settings) -> None:
    """Put ``sub``'s settings over ``out``'s (its conda dependencies replace ``out``'s whole)."""
    if sub.conda_file is not None or sub.conda_doc is not None:
        out.conda_file, out.conda_doc, out.conda_name = None, None, None
    for name in ("entry_script", "source_dir", "conda_file", "conda_doc", "conda_name", "base", "platform"):
        value = getattr(sub, name)
        if value is not None:
            setattr(out, name, value)
    out.user_managed = out.user_managed or sub.user_managed
    out.apt += [p for p in sub.apt if p not in out.apt]
    out.env.update(sub.env)
    out.labels.update(sub.labels)
    out.notes.extend(sub.notes)


# --- deploymentconfig.json ---------------------------------------------------------------

#: keys that configure the service around the container (Azure's front end, the cluster), never an image
_COMPUTE_SIDE = {"computeType", "containerResourceRequirements", "autoScaler", "numReplicas", "authEnabled",
                 "tokenAuthEnabled", "keys", "sslEnabled", "sslCertificate", "sslKey", "cname", "dnsNameLabel",
                 "location", "namespace", "gpuCores", "livenessProbeRequirements", "maxConcurrentRequestsPerContainer",
                 "maxQueueWaitMs", "port", "computeTargetName", "description", "tags", "properties",
                 "primaryKey", "secondaryKey", "cpuCores", "memoryGb", "vnetName", "subnetName", "isDefault",
                 "trafficPercentile", "type", "name", "version"}
_DC_KEYS = _COMPUTE_SIDE | {"appInsightsEnabled", "scoringTimeoutMs", "environmentVariables", "dataCollection"}


def read_deploy_config(path: Path) -> V1Settings:
    """``deploymentconfig.json``: what changes the container becomes image Env; the rest is named
    in one note as not part of an image."""
    doc = _read_doc(path, "deployment config")
    where = path.name
    _unknown(where, doc, _DC_KEYS, "deployment config")
    out = V1Settings()
    if doc.get("appInsightsEnabled"):
        out.env["AML_APP_INSIGHTS_ENABLED"] = "true"
        out.notes.append(f"{where}: appInsightsEnabled sets AML_APP_INSIGHTS_ENABLED=true; give the Application "
                         "Insights key at run time (-e AML_APP_INSIGHTS_KEY=...), never in the image")
    timeout = doc.get("scoringTimeoutMs")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
            raise InputError(f"{where}: scoringTimeoutMs must be a positive whole number of milliseconds, not {timeout!r}")
        out.env["SCORING_TIMEOUT_MS"] = str(timeout)
    out.env.update(_env_vars(where, "environmentVariables", doc.get("environmentVariables")))
    collection = doc.get("dataCollection")
    if isinstance(collection, dict):
        _unknown(where, collection, {"storageEnabled"}, "dataCollection")
        if collection.get("storageEnabled"):
            raise InputError(f"{where}: dataCollection.storageEnabled is not supported: model data collection "
                             "needs Azure's storage; set it false or drop it")
    elif collection is not None:
        raise InputError(f"{where}: dataCollection must be an object {{\"storageEnabled\": false}}")
    compute = sorted(k for k in doc if k in _COMPUTE_SIDE)
    if compute:
        out.notes.append(f"{where}: {', '.join(compute)} configure the service, not the image (the container's "
                         "parallelism is WORKER_COUNT: -e WORKER_COUNT=N)")
    return out
