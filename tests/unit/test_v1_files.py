"""Azure ML v1 files as build inputs (azureml.v1files) and the Python they pin (azureml.pythonpin).

Every v1 key that would change the image and is not supported is refused by ``ociassemble
build`` in one line naming it, exit 1, nothing written; the supported ones become project
settings. Cheap: no base is read for the refusals (they stop the build before it), and the
CLI runs in this process.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from ociassemble import cli
from ociassemble.azureml.debianbase import RELEASES, default_base_path, make_base_command, release_for, sources_for
from ociassemble.azureml.project import project_of
from ociassemble.settings import Settings
from ociassemble.azureml.pythonpin import choose_python, parse_pin
from ociassemble.azureml.recipe import user_env_of, wanted_python
from ociassemble.azureml.requirements import read_app_pins
from ociassemble.errors import InputError
from ociassemble.image.cache import BlobCache
from ociassemble.image.platform import parse_platform
from ociassemble.resources import layers_dir
from tests.unit.test_recipe_inputs import fake_base

SCORE = "def init():\n    pass\n\ndef run(data):\n    return data\n"
CONDA = "name: project_environment\ndependencies:\n- python=3.11\n- pip:\n  - azureml-defaults\n  - numpy\n"


def v1_project(tmp_path: Path, config: dict[str, Any] | None = None, deploy: dict[str, Any] | None = None,
               files: dict[str, str] | None = None) -> Path:
    """A folder as the az CLI docs lay it out: inferenceconfig.json, source/score.py, source/myenv.yml."""
    p = tmp_path / "proj"
    (p / "source").mkdir(parents=True)
    (p / "source" / "score.py").write_text(SCORE)
    (p / "source" / "myenv.yml").write_text(CONDA)
    (p / "model.pkl").write_bytes(b"model")
    ic = {"entryScript": "score.py", "runtime": "python", "condaFile": "myenv.yml", "sourceDirectory": "source"}
    (p / "inferenceconfig.json").write_text(json.dumps(ic if config is None else config))
    if deploy is not None:
        (p / "deploymentconfig.json").write_text(json.dumps(deploy))
    for name, text in (files or {}).items():
        (p / name).parent.mkdir(parents=True, exist_ok=True)
        (p / name).write_text(text)
    return p


def build(p: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str]:
    """``ociassemble build`` of the folder with nothing but --model (and ``flags``): exit code, stderr."""
    cwd = Path.cwd()
    os.chdir(p)
    try:
        code = cli.main(["build", ".", "--model", "model.pkl", "-o", f"oci-archive:{p / 'image.tar'}",
                         "--cache-dir", str(p.parent / "cache"), *flags])
    finally:
        os.chdir(cwd)
    return code, capsys.readouterr().err


def assert_refused(p: Path, code: int, err: str, pattern: str) -> None:
    """One line naming the key, exit 1, no traceback, nothing written."""
    lines = err.strip().splitlines()
    assert code == 1, err
    assert "Traceback" not in err
    assert lines[-1].startswith("ociassemble: error: "), err
    assert re.search(pattern, lines[-1]), lines[-1]
    assert not [x for x in p.iterdir() if x.name.startswith(("image", ".image"))]


IC = {"entryScript": "score.py", "sourceDirectory": "source"}
ENV = {"name": "my-env", "python": {"userManagedDependencies": False, "condaDependencies": {"dependencies": ["python=3.11"]}}}


def env_with(**sections: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(ENV))
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key].update(value)
        else:
            doc[key] = value
    return {**IC, "environment": doc}


@pytest.mark.parametrize("config,files,pattern", [
    ({**IC, "runtime": "spark-py"}, {}, r"inferenceconfig\.json: runtime spark-py is not supported"),
    ({**IC, "runtime": "R"}, {}, r"runtime 'R' is unknown"),
    ({**IC, "extraDockerfileSteps": "steps.txt"}, {"source/steps.txt": "# system packages\nRUN apt-get install -y libgomp1\nRUN true\n"},
     r"extraDockerfileSteps \(steps\.txt\): 'RUN true' runs 'true', which is not a Debian package installation"),
    ({**IC, "extraDockerFileSteps": "steps.txt"}, {"source/steps.txt": "RUN pip install x\n"},
     r"extraDockerFileSteps \(steps\.txt\): 'RUN pip install x' runs 'pip install x', which is not a Debian package"),
    ({**IC, "extraDockerfileSteps": "steps.txt"}, {"source/steps.txt": "COPY . /app\n"},
     r"extraDockerfileSteps \(steps\.txt\): COPY \('COPY \. /app'\) is not supported"),
    ({**IC, "extraDockerfileSteps": "nosuch.txt"}, {}, r"extraDockerfileSteps .*nosuch\.txt cannot be read"),
    ({**IC, "enableGpu": True}, {}, r"enableGpu is not supported: the default bases have no CUDA"),
    ({**IC, "cudaVersion": "10.0"}, {}, r"cudaVersion '10\.0' is not supported"),
    ({**IC, "schemaFile": "schema.json"}, {}, r"schemaFile \(schema\.json\) is not supported"),
    ({**IC, "entryScirpt": "x.py"}, {}, r"unknown inference config key 'entryScirpt'"),
    ({"sourceDirectory": "source"}, {}, r"entryScript is missing"),
    ({**IC, "dependencies": ["../outside.txt"]}, {"outside.txt": "x"}, r"dependency \.\./outside\.txt is outside the source folder"),
    ({**IC, "baseImageRegistry": {"address": "myregistry.azurecr.io"}}, {}, r"baseImageRegistry without baseImage"),
    ({**env_with(), "condaFile": "myenv.yml"}, {}, r"give either environment or condaFile, not both"),
    (env_with(python={"baseCondaEnvironment": "base"}), {}, r"python\.baseCondaEnvironment is not supported"),
    (env_with(python={"interpreterPath": "/opt/miniconda/bin/python"}), {},
     r"python\.interpreterPath '/opt/miniconda/bin/python' is not supported"),
    (env_with(python={"pythonPath": "x"}), {}, r"unknown python key 'pythonPath'"),
    (env_with(docker={"baseDockerfile": "FROM ubuntu:20.04\nRUN apt-get update\n"}), {},
     r"docker\.baseDockerfile \('FROM ubuntu:20\.04'…\) is not supported"),
    (env_with(docker={"buildContext": {"locationType": "git", "location": "x"}}), {}, r"docker\.buildContext is not supported"),
    (env_with(docker={"platform": {"os": "Windows", "architecture": "amd64"}}), {}, r"docker\.platform\.os 'Windows' is not supported"),
    (env_with(spark={"repositories": [], "packages": [{"group": "g", "artifact": "a", "version": "1"}]}), {},
     r"spark\.packages is not supported"),
    (env_with(databricks={"pypiLibraries": [{"package": "x"}]}), {}, r"databricks\.pypiLibraries is not supported"),
    (env_with(r={"rVersion": "4.0"}), {}, r"r is not supported"),
    (env_with(inferencingStackVersion="1.2"), {}, r"inferencingStackVersion '1\.2' is not supported"),
    (env_with(condaEnv="x"), {}, r"unknown environment key 'condaEnv'"),
    ({**IC, "environment": "saved-env"}, {"saved-env/azureml_environment.json": json.dumps({"name": "x"}),
                                          "saved-env/BaseDockerfile": "FROM debian\n"},
     r"docker\.baseDockerfile \('FROM debian'…\) is not supported"),
    ({**IC, "environment": "no-such-env"}, {}, r"environment .*no-such-env has no azureml_environment\.json"),
])
def test_unsupported_inference_config_keys_are_one_line_each(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             config: dict, files: dict, pattern: str) -> None:
    p = v1_project(tmp_path, config, files=files)
    code, err = build(p, capsys)
    assert_refused(p, code, err, pattern)


@pytest.mark.parametrize("deploy,pattern", [
    ({"computeType": "aks", "dataCollection": {"storageEnabled": True}}, r"dataCollection\.storageEnabled is not supported"),
    ({"computeType": "aci", "gpuCores": 1, "sslEnabledd": True}, r"unknown deployment config key 'sslEnabledd'"),
    ({"scoringTimeoutMs": "60s"}, r"scoringTimeoutMs must be a positive whole number of milliseconds"),
    ({"environmentVariables": ["A=1"]}, r"environmentVariables must be an object"),
])
def test_unsupported_deployment_config_keys_are_one_line_each(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              deploy: dict, pattern: str) -> None:
    p = v1_project(tmp_path, deploy=deploy)
    code, err = build(p, capsys)
    assert_refused(p, code, err, r"deploymentconfig\.json: " + pattern)


def test_bad_json_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = v1_project(tmp_path)
    (p / "inferenceconfig.json").write_text('{"entryScript": "score.py",}')
    code, err = build(p, capsys)
    assert_refused(p, code, err, r"inferenceconfig\.json is not valid JSON")


@pytest.mark.parametrize("pin,pattern", [
    ("python=3.6.2", r"myenv\.yml pins python=3\.6\.2: no default base has Python 3\.6 \(.*\); pin python=3\.9 "
                     r"instead, or pass --base an image with Python 3\.6"),
    ("python=3.10", r"pins python=3\.10: .*pin python=3\.9 or python=3\.11 instead"),
    ("python=3.12.4", r"pins python=3\.12\.4: .*pin python=3\.11 or python=3\.13 instead"),
])
def test_a_pin_no_debian_release_carries_suggests_base_or_the_nearest(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                      pin: str, pattern: str) -> None:
    p = v1_project(tmp_path)
    (p / "source" / "myenv.yml").write_text(CONDA.replace("python=3.11", pin))
    code, err = build(p, capsys)
    assert_refused(p, code, err, pattern)


def test_a_missing_base_names_the_make_base_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = v1_project(tmp_path)
    (p / "source" / "myenv.yml").write_text(CONDA.replace("python=3.11", "python=3.9"))
    code, err = build(p, capsys)
    assert_refused(p, code, err, r"no base image with Python 3\.9: run 'ociassemble make-base --python 3\.9' once "
                                 r"\(Debian bullseye")
    code, err = build(p, capsys, "--python", "3.13")
    assert_refused(p, code, err, r"--python asks for Python 3\.13 but myenv\.yml pins python=3\.9: make them agree")


def test_an_explicit_base_with_another_python_names_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = v1_project(tmp_path)
    (p / "source" / "myenv.yml").write_text(CONDA.replace("python=3.11", "python=3.9"))
    base = fake_base(tmp_path / "base")  # Python 3.11
    code, err = build(p, capsys, "--base", f"rootfs:{base}")
    assert_refused(p, code, err, r"myenv\.yml pins python=3\.9 but the base has Python 3\.11 \(rootfs:.*\); .*"
                                 r"'ociassemble make-base --python 3\.9' makes one")


def test_paths_follow_source_directory_and_settings_become_the_project(tmp_path: Path) -> None:
    p = v1_project(tmp_path, {"entryScript": "scoring/score.py", "sourceDirectory": "source", "condaFile": "myenv.yml",
                              "runtime": "python", "description": "a model", "enableGpu": False,
                              "baseImage": "team/base:1", "baseImageRegistry": {"address": "myregistry.azurecr.io",
                                                                                  "username": "u", "password": "p"}},
                   deploy={"computeType": "aks", "appInsightsEnabled": True, "scoringTimeoutMs": 30000,
                           "maxConcurrentRequestsPerContainer": 2, "autoScaler": {"autoscaleEnabled": True},
                           "environmentVariables": {"A": "deploy", "B": 1}})
    proj = project_of(Settings.load(p, cwd=p, env={"B": "flag"}, environ={}))
    assert proj.entry_script == p / "source" / "scoring" / "score.py"
    assert proj.source_dir == p / "source"
    assert proj.conda_file == p / "source" / "myenv.yml"
    assert proj.base == "myregistry.azurecr.io/team/base:1"
    assert proj.labels == {"org.opencontainers.image.description": "a model"}
    assert proj.env == {"AML_APP_INSIGHTS_ENABLED": "true", "SCORING_TIMEOUT_MS": "30000", "A": "deploy", "B": "flag"}
    notes = "\n".join(proj.notes)
    assert "baseImageRegistry credentials are not read from the file: run 'ociassemble login myregistry.azurecr.io'" in notes
    assert "autoScaler, computeType, maxConcurrentRequestsPerContainer configure the service, not the image" in notes
    assert proj.requirements is None  # no requirements.txt default next to a v1 config


def test_an_inline_environment_as_the_cli_docs_write_it(tmp_path: Path) -> None:
    env = {"docker": {"arguments": [], "baseDockerfile": None,
                      "baseImage": "mcr.microsoft.com/azureml/intelmpi2018.3-ubuntu18.04", "enabled": False,
                      "sharedVolumes": True, "shmSize": None},
           "environmentVariables": {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"}, "name": "my-deploy-env",
           "python": {"baseCondaEnvironment": None,
                      "condaDependencies": {"channels": ["conda-forge"], "name": "project_environment",
                                            "dependencies": ["python=3.9", {"pip": ["azureml-defaults", "numpy"]}]},
                      "condaDependenciesFile": None, "interpreterPath": "python", "userManagedDependencies": False},
           "version": "1"}
    p = v1_project(tmp_path, {"entryScript": "score.py", "sourceDirectory": "source", "environment": env})
    proj = project_of(Settings.load(p, cwd=p, environ={}))
    assert proj.base is None  # Azure ML's default training base: the default Debian base instead, said in a note
    assert any("is Azure ML's default training base" in n for n in proj.notes)
    assert proj.env == {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"}
    user_env, name = user_env_of(proj)
    assert user_env.requirements == ["azureml-defaults", "numpy"] and user_env.python_pin == "python=3.9"
    assert name == "inferenceconfig.json environment python.condaDependencies"
    assert wanted_python(proj) == "3.9"


def test_a_saved_environment_folder_and_user_managed_dependencies(tmp_path: Path) -> None:
    p = v1_project(tmp_path, IC, files={
        "env/azureml_environment.json": json.dumps({
            "name": "saved", "version": None, "environmentVariables": {"MODE": "fast"},
            "python": {"userManagedDependencies": True, "interpreterPath": "python", "condaDependenciesFile": None,
                       "baseCondaEnvironment": None},
            "docker": {"enabled": False, "baseImage": "localhost:5000/serving-base:3.13", "baseDockerfile": None,
                       "sharedVolumes": True, "shmSize": "2g", "arguments": [],
                       "baseImageRegistry": {"address": None, "username": None, "password": None},
                       "platform": {"os": "Linux", "architecture": "amd64"}},
            "spark": {"repositories": [], "packages": [], "precachePackages": True},
            "databricks": {"mavenLibraries": [], "pypiLibraries": [], "rcranLibraries": [], "jarLibraries": [],
                           "eggLibraries": []},
            "r": None, "inferencingStackVersion": None}),
        "env/conda_dependencies.yml": "dependencies:\n- python=3.13\n- pip:\n  - numpy\n"})
    proj = project_of(Settings.load(p, cwd=p, environment=p / "env", environ={}))
    assert proj.base == "localhost:5000/serving-base:3.13" and proj.platforms == (parse_platform("linux/amd64"),)
    assert proj.env == {"MODE": "fast"} and proj.conda_file == p / "env" / "conda_dependencies.yml"
    user_env, _ = user_env_of(proj)
    assert user_env.requirements == [] and user_env.python_pin == "python=3.13"  # installed: nothing of it
    assert any("userManagedDependencies is true" in n for n in proj.notes)


def test_extra_dockerfile_steps_apt_lines_become_the_projects_apt_packages(tmp_path: Path) -> None:
    """As Azure's docs tell v1 users to install a system library: the RUN apt-get lines' packages
    join the config's apt and --apt-package (once each, the v1 file's first), said in a note."""
    steps = ("# LightGBM needs OpenMP\n"
             "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\\n"
             "    libgomp1 libgl1 && rm -rf /var/lib/apt/lists/*\n"
             "RUN apt-get install -y libgomp1\n")
    p = v1_project(tmp_path, {**IC, "extraDockerfileSteps": "steps.dockerfile"},
                   files={"source/steps.dockerfile": steps, "ociassemble.toml": 'apt = ["curl", "libgl1"]\n'})
    proj = project_of(Settings.load(p, cwd=p, apt=["jq", "curl"], environ={}))
    assert proj.apt == ["libgomp1", "libgl1", "curl", "jq"]
    assert "inferenceconfig.json: extraDockerfileSteps (steps.dockerfile) installs libgomp1, libgl1 in the Debian " \
           "packages layer (as apt = [...] would)" in proj.notes


def test_the_config_file_goes_over_the_v1_files_and_says_so(tmp_path: Path) -> None:
    p = v1_project(tmp_path, {**IC, "condaFile": "myenv.yml"},
                   files={"ociassemble.toml": 'entry_script = "source/other.py"\npython = "3.11"\n'})
    proj = project_of(Settings.load(p, cwd=p, environ={}))
    assert proj.entry_script == p / "source" / "other.py" and proj.python == "3.11"
    assert any("ociassemble.toml's entry_script replaces the v1 files'" in n for n in proj.notes)


def test_python_pins() -> None:
    cases = {"python=3.9": "3.9", "python=3.9.12": "3.9", "python>=3.8,<3.10": "3.9", "python 3.13": "3.13",
             "python>=3.8": "3.11", "python=3.11.2=h1234_0": "3.11", "python": "3.11", "3.13": "3.13"}
    for text, python in cases.items():
        assert choose_python(None, parse_pin(text, "env.yml")) == python, text
    assert choose_python(parse_pin("3.9", "--python"), parse_pin("python>=3.8", "env.yml")) == "3.9"
    with pytest.raises(InputError, match=r"'python=banana' is not a version constraint"):
        parse_pin("python=banana", "env.yml")


def test_one_debian_release_per_python_and_its_base_folder(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    amd, arm = parse_platform("linux/amd64"), parse_platform("linux/arm64")
    assert {v: r.suite for v, r in RELEASES.items()} == {"3.9": "bullseye", "3.11": "bookworm", "3.13": "trixie"}
    assert default_base_path(cache, amd).name == "bookworm-azureml-amd64"  # the folder it always had
    assert default_base_path(cache, arm, "3.9").name == "bullseye-azureml-arm64"
    assert default_base_path(cache, amd, "3.13").name == "trixie-azureml-amd64"
    assert make_base_command("3.9", [arm]) == "ociassemble make-base --python 3.9 --platform linux/arm64"
    assert make_base_command("3.11") == "ociassemble make-base"
    with pytest.raises(InputError, match=r"no default base has Python 3\.10"):
        release_for("3.10")


def test_the_machines_sources_are_given_with_the_releases_suites() -> None:
    deb822 = ("Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
              "Components: main non-free-firmware\n\nTypes: deb\nURIs: http://mirror.invalid/debian-security\n"
              "Suites: bookworm-security\nComponents: main\n")
    bullseye = sources_for(deb822, RELEASES["3.9"])
    assert "Suites: bullseye bullseye-updates\n" in bullseye and "Suites: bullseye-security\n" in bullseye
    assert "Components: main\n" in bullseye and "non-free-firmware" not in bullseye  # bullseye has none
    trixie = sources_for(deb822, RELEASES["3.13"])
    assert "Suites: trixie bullseye" not in trixie and "Suites: trixie-security" in trixie
    assert "non-free-firmware" in trixie
    assert sources_for(deb822, RELEASES["3.11"]) == deb822  # the machine's own release: as it is
    one_line = "deb [signed-by=/k.gpg] http://mirror.invalid/debian bookworm main\n"
    assert sources_for(one_line, RELEASES["3.13"]) == "deb [signed-by=/k.gpg] http://mirror.invalid/debian trixie main\n"


def test_the_server_pins_hold_for_every_default_python() -> None:
    pins = {v: {str(k): p.version for k, p in read_app_pins(layers_dir() / "app-requirements.txt", v).items()}
            for v in RELEASES}
    assert pins["3.9"]["gunicorn"] == "23.0.0"  # gunicorn 24+ need Python 3.10
    assert pins["3.11"]["gunicorn"] == pins["3.13"]["gunicorn"] == "27.0.1"
    assert all(set(p) == {"flask", "werkzeug", "gunicorn", "inference-schema", "flask-cors"} for p in pins.values())


def test_an_inline_environment_may_name_its_conda_file(tmp_path: Path) -> None:
    env = {"name": "e", "python": {"condaDependenciesFile": "myenv.yml", "userManagedDependencies": False}}
    p = v1_project(tmp_path, {**IC, "environment": env})
    proj = project_of(Settings.load(p, cwd=p, environ={}))
    assert proj.conda_file == p / "source" / "myenv.yml"  # relative to sourceDirectory, as condaFile is
    assert user_env_of(proj)[0].requirements == ["azureml-defaults", "numpy"]


def test_a_failed_mmdebstrap_names_its_first_error() -> None:
    from ociassemble.azureml.debianbase import _mmdebstrap_reason

    stderr = ("I: downloading packages with apt...\nGet:1 http://mirror.invalid/debian bullseye/main arm64 dpkg\n"
              "E: Failed to fetch http://mirror.invalid/debian-security/pool/updates/main/d/dpkg/dpkg_1.20.14_arm64.deb"
              "  404  Not Found [IP: 192.0.2.1 80]\n"
              "E: Failed to fetch http://mirror.invalid/debian-security/pool/updates/main/g/glibc/libc6_2.31_arm64.deb"
              "  404  Not Found [IP: 192.0.2.1 80]\n"
              "E: Unable to fetch some archives, maybe run apt-get update or try with --fix-missing?\n"
              "E: mmdebstrap failed to run\n")
    assert _mmdebstrap_reason(stderr) == ("the apt mirror did not serve dpkg_1.20.14_arm64.deb (404 Not Found) and 1 "
                                          "more packages (check that it carries this release for this architecture)")
    assert _mmdebstrap_reason("E: Unable to locate package nginx-light\nE: mmdebstrap failed to run\n") == \
        "E: Unable to locate package nginx-light"
