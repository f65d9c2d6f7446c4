"""End to end: Azure ML v1 CLI project folders that pin an older or newer Python build and serve.

Two folders as ``az ml model deploy --ic inferenceconfig.json --dc deploymentconfig.json``
takes them: an inferenceconfig.json naming ``scoring/score.py`` under ``sourceDirectory``
and a CondaDependencies-style conda file pinning ``python=3.9`` (one folder) or
``python=3.13`` (the other) with azureml-defaults, inference-schema and numpy, and a
deploymentconfig.json. Each is built with nothing but ``--model``: the pin picks the
default base (Debian bullseye, trixie), pex resolves the server's and the user's packages
for that Python, and the deployment config's scoring timeout becomes image Env. Both are
started with ``ociassemble run`` at once and scored through nginx; ``run()`` answers with
the interpreter's version, so the image's Python is what the pin asked for.

Needs root and bwrap: the bullseye and trixie bases (from .debs) take about 10 to 20 s each
the first time (kept in the shared test cache), pex about a minute per Python.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from ociassemble.image.cache import BlobCache
from tests.conftest import default_base, run_cli
from tests.e2e.conftest import http, serving

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="ociassemble run needs root"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
]

BOOT_TIMEOUT_S = 180
INFERENCE_CONFIG = {"entryScript": "scoring/score.py", "runtime": "python", "condaFile": "myenv.yml",
                    "sourceDirectory": "source", "enableGpu": False, "description": "v1 project on Python {python}"}
DEPLOYMENT_CONFIG = {"computeType": "aci", "containerResourceRequirements": {"cpu": 0.5, "memoryInGB": 1.0},
                     "authEnabled": True, "scoringTimeoutMs": 45000}
# azureml.core.conda_dependencies.CondaDependencies' layout
MYENV_YML = """\
# Conda environment specification. The dependencies defined in this file will
# be automatically provisioned for runs with userManagedDependencies=False.

name: project_environment
dependencies:
  # The python interpreter version.
- python={python}

- pip:
    # Required packages for AzureML execution, history, and data preparation.
  - azureml-defaults
  - inference-schema[numpy-support]
- numpy
channels:
- anaconda
- conda-forge
"""
SCORE = '''\
import os
import sys

import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    global weights
    with open(os.path.join(os.getenv("AZUREML_MODEL_DIR"), "weights.json")) as f:
        weights = np.array(__import__("json").load(f))


@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0, 3.0]])))
@output_schema(NumpyParameterType(np.array([4.0])))
def run(data):
    return {"result": (data @ weights).tolist(), "python": sys.version.split()[0],
            "timeout": os.getenv("SCORING_TIMEOUT_MS")}
'''
WEIGHTS = [0.5, 1.0, 2.0]
ROWS = [[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]]


def _project(root: Path, python: str) -> Path:
    folder = root / f"py{python}"
    (folder / "source" / "scoring").mkdir(parents=True)
    (folder / "inferenceconfig.json").write_text(json.dumps(
        {**INFERENCE_CONFIG, "description": INFERENCE_CONFIG["description"].format(python=python)}, indent=4))
    (folder / "deploymentconfig.json").write_text(json.dumps(DEPLOYMENT_CONFIG, indent=4))
    (folder / "source" / "myenv.yml").write_text(MYENV_YML.format(python=python))
    (folder / "source" / "scoring" / "score.py").write_text(SCORE)
    (folder / "weights.json").write_text(json.dumps(WEIGHTS))
    return folder


@pytest.fixture(scope="module")
def served(shared_cache: BlobCache, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[int, str]]]:
    """The 3.9 and 3.13 projects built on their default bases and running: port and build messages."""
    root = tmp_path_factory.mktemp("v1-pythons")
    builds: dict[str, tuple[Path, str]] = {}
    for python in ("3.9", "3.13"):
        default_base(shared_cache, python=python)  # once per fresh cache, under a lock
        folder = _project(root, python)
        out = root / f"py{python}.tar"
        proc = run_cli("build", ".", "--model", "weights.json", "-o", f"oci-archive:{out}:latest",
                       "--cache-dir", str(shared_cache.root), cwd=folder)
        assert proc.returncode == 0, proc.stderr
        builds[python] = (out, proc.stderr)
    with serving({python: out for python, (out, _) in builds.items()}, root, shared_cache.root, BOOT_TIMEOUT_S) as ports:
        yield {python: (port, builds[python][1]) for python, port in ports.items()}


@pytest.mark.parametrize("python,patch", [("3.9", "3.9."), ("3.13", "3.13.")])
def test_the_pinned_python_serves_the_v1_project(served: dict[str, tuple[int, str]], python: str, patch: str) -> None:
    port, messages = served[python]
    status, headers, answer = http("POST", f"http://127.0.0.1:{port}/score", json.dumps({"data": ROWS}).encode(),
                                   {"Content-Type": "application/json"})
    assert status == 200, answer
    assert headers.get("server", "").startswith("nginx")
    doc = json.loads(answer)
    assert doc["python"].startswith(patch), doc  # the image's python3 is the pinned one
    assert doc["result"] == pytest.approx([sum(w * x for w, x in zip(WEIGHTS, row)) for row in ROWS])
    assert doc["timeout"] == "45000"  # deploymentconfig.json's scoringTimeoutMs, as image Env
    status, _, swagger = http("GET", f"http://127.0.0.1:{port}/swagger.json")
    assert status == 200 and json.loads(swagger)["definitions"]["ServiceInput"]["example"] == {"data": [[1.0, 2.0, 3.0]]}
    assert f"resolving Python dependencies for cp{python.replace('.', '')} linux/" in messages or "pex ran" not in messages
    assert "authEnabled, computeType, containerResourceRequirements configure the service, not the image" in messages
    assert "azureml-defaults not installed: the image already has what it provides" in messages
