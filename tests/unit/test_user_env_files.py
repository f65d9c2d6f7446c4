"""Environment files as Azure ML projects have them: which one is used, and what is read from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ociassemble import cli
from ociassemble.errors import UsageError
from ociassemble.azureml.requirements import merge_requirements, read_app_pins
from ociassemble.azureml.userenv import read_user_env
from ociassemble.resources import layers_dir

# What azureml.core.conda_dependencies.CondaDependencies.create(...).serialize_to_string() writes,
# with the channels Azure ML's samples add.
CONDA_DEPENDENCIES_YML = """\
# Conda environment specification. The dependencies defined in this file will
# be automatically provisioned for runs with userManagedDependencies=False.

# Details about the Conda environment file format:
# https://conda.io/docs/user-guide/tasks/manage-environments.html#create-env-file-manually

name: project_environment
dependencies:
  # The python interpreter version.
  # Currently Azure ML only supports 3.8 and later.
- python=3.11.2

- pip:
    # Required packages for AzureML execution, history, and data preparation.
  - azureml-defaults

  - inference-schema[numpy-support]
- numpy==2.4.6
- joblib=1.6
- pip=23.0.1
channels:
- anaconda
- conda-forge
"""


def test_a_conda_file_as_conda_dependencies_writes_it(tmp_path: Path) -> None:
    env_file = tmp_path / "myenv.yml"
    env_file.write_text(CONDA_DEPENDENCIES_YML)
    env = read_user_env(env_file)
    assert env.python == "3.11"
    assert env.requirements == ["azureml-defaults", "inference-schema[numpy-support]", "numpy==2.4.6", "joblib==1.6.*"]
    assert env.notes == ["conda channels anaconda, conda-forge ignored: packages come from PyPI"]
    merged = merge_requirements(read_app_pins(layers_dir() / "app-requirements.txt"), env.requirements, source="myenv.yml")
    assert merged.lines[-2:] == ["numpy==2.4.6", "joblib==1.6.*"]
    assert "inference-schema[numpy-support]==1.8" in merged.lines
    assert not any("azureml" in line for line in merged.lines)


def test_requirements_txt_comments_continuations_and_included_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "base.txt").write_text("joblib==1.6.0  # for the model\n-c pins.txt\n")
    (tmp_path / "requirements.txt").write_text(
        "# run()'s packages\nazureml-defaults>=1.44\n-r sub/base.txt\nnumpy \\\n  ==2.4.6\n\n--extra-index-url=https://example.invalid/simple\n")
    env = read_user_env(tmp_path / "requirements.txt")
    assert env.requirements == ["azureml-defaults>=1.44", "joblib==1.6.0", f"-c {tmp_path / 'sub' / 'pins.txt'}",
                                "numpy   ==2.4.6", "--extra-index-url=https://example.invalid/simple"]


def _project(tmp_path: Path, *flags: str, config: str | None = None):  # type: ignore[no-untyped-def]
    (tmp_path / "score.py").write_text("def init():\n    pass\n\ndef run(data):\n    return data\n")
    (tmp_path / "requirements.txt").write_text("numpy\n")
    (tmp_path / "myenv.yml").write_text(CONDA_DEPENDENCIES_YML)
    (tmp_path / "other.txt").write_text("joblib\n")
    if config is not None:
        (tmp_path / "ociassemble.toml").write_text(config)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        from ociassemble.azureml.project import project_of
        from ociassemble.settings import Settings

        return project_of(Settings.from_argparse(cli.build_parser().parse_args(["build", str(tmp_path), *flags])))
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("config", [None, 'requirements = "requirements.txt"\n'])
def test_an_explicit_environment_file_wins_over_the_folders_requirements_txt(tmp_path: Path, config: str | None) -> None:
    project = _project(tmp_path, "--conda-file", "myenv.yml", config=config)
    assert (project.conda_file, project.requirements) == (tmp_path / "myenv.yml", None)
    project = _project(tmp_path, "-r", "other.txt", config=config)
    assert (project.conda_file, project.requirements) == (None, tmp_path / "other.txt")
    assert _project(tmp_path, config=config).requirements == tmp_path / "requirements.txt"


def test_install_serving_stack_from_the_flag_or_the_config(tmp_path: Path) -> None:
    assert _project(tmp_path).install_serving_stack is False
    assert _project(tmp_path, "--install-serving-stack").install_serving_stack is True
    assert _project(tmp_path, config="install_serving_stack = true\n").install_serving_stack is True


def test_a_program_gets_the_flags_project_from_plain_values(tmp_path: Path) -> None:
    """``Settings.load`` is what the flags call: relative paths are the given ``cwd``'s, as a flag's are the shell's."""
    from ociassemble.azureml.project import project_of
    from ociassemble.settings import Settings

    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "score.py").write_text("def init():\n    pass\n\ndef run(data):\n    return data\n")
    (tmp_path / "reqs.txt").write_text("numpy\n")
    project = project_of(Settings.load(tmp_path / "app", cwd=tmp_path, requirements="reqs.txt", models=["m.bin:demo:3"],
                                       env={"A": "1"}, labels={"team": "x"}, compression="zstd", compression_level=5))
    assert (project.requirements, project.conda_file) == (tmp_path / "reqs.txt", None)
    assert [(m.path, m.name, m.version) for m in project.models] == [(tmp_path / "m.bin", "demo", "3")]
    assert (project.env, project.labels, project.compression, project.compression_level) == (
        {"A": "1"}, {"team": "x"}, "zstd", 5)
    with pytest.raises(UsageError, match="is not a folder"):
        Settings.load(tmp_path / "missing")
