"""End to end: Azure ML v1 projects as people have them build and serve unchanged.

Three projects, written as Azure ML's tutorials and docs write them, each built from the
Debian base with ``ociassemble build``, started with ``ociassemble run`` (all three at
once, each on its own published port) and scored over HTTP through nginx:

* ``tutorial``: one file model (``Model.register(model_path="sklearn_mnist_model.pkl")``),
  read as ``os.path.join(AZUREML_MODEL_DIR, "sklearn_mnist_model.pkl")``; a requirements.txt.
* ``quickstart``: one MLflow-style folder model (``model/`` with MLmodel and model.pkl),
  read as ``os.path.join(AZUREML_MODEL_DIR, "model/model.pkl")``; the same requirements.txt.
* ``two_models``: a file model in two versions and a folder model, found with
  ``Model.get_model_path`` from inference-schema-decorated ``run()``, and through
  ``AZUREML_MODEL_DIR`` (then the models folder); a conda file as CondaDependencies writes it.

Every environment lists ``azureml-defaults`` and ``inference-schema[numpy-support]``: the
build says the first is provided by the image, and installs the second once, with the
server's pin.  The conda file translates to the requirements.txt's lines, so pex runs once.
The models are plain Python objects pickled with joblib here (no downloads).

Needs root and bwrap (the base: ``make-base``, from .debs); about two minutes with a cold deps cache.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from ociassemble.image.cache import BlobCache
from tests.conftest import run_cli
from tests.e2e.conftest import http, serving

joblib = pytest.importorskip("joblib")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="ociassemble run needs root"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
]

BOOT_TIMEOUT_S = 180  # three images boot at once on 2 cores
REQUIREMENTS_TXT = """\
azureml-defaults
inference-schema[numpy-support]
numpy==2.4.6
joblib==1.6.0
"""
# azureml.core.conda_dependencies.CondaDependencies' layout, comments and all
MYENV_YML = """\
# Conda environment specification. The dependencies defined in this file will
# be automatically provisioned for runs with userManagedDependencies=False.

# Details about the Conda environment file format:
# https://conda.io/docs/user-guide/tasks/manage-environments.html#create-env-file-manually

name: project_environment
dependencies:
  # The python interpreter version.
  # Currently Azure ML only supports 3.8 and later.
- python=3.11

- pip:
    # Required packages for AzureML execution, history, and data preparation.
  - azureml-defaults

  - inference-schema[numpy-support]
- numpy==2.4.6
- joblib=1.6.0
- pip=23.0.1
channels:
- anaconda
- conda-forge
"""

TUTORIAL_SCORE = '''\
import json
import os

import joblib
import numpy as np


def init():
    global model
    # AZUREML_MODEL_DIR is an environment variable created during deployment.
    # It is the path to the model folder (./azureml-models/$MODEL_NAME/$VERSION)
    # For multiple models, it points to the folder containing all deployed models (./azureml-models)
    model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "sklearn_mnist_model.pkl")
    model = joblib.load(model_path)


def run(raw_data):
    data = np.array(json.loads(raw_data)["data"])
    # make prediction
    y_hat = data @ np.array(model["coef"]) + model["intercept"]
    # you can return any data type as long as it is JSON-serializable
    return y_hat.tolist()
'''

QUICKSTART_SCORE = '''\
import json
import logging
import os

import joblib
import numpy


def init():
    """
    This function is called when the container is initialized/started, typically after create/update of the deployment.
    You can write the logic here to perform init operations like caching the model in memory
    """
    global model, flavor
    # AZUREML_MODEL_DIR is an environment variable created during deployment.
    # It is the path to the model folder (./azureml-models/$MODEL_NAME/$VERSION)
    # Please provide your model's folder name if there is one
    model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model/model.pkl")
    # deserialize the model file back into a sklearn model
    model = joblib.load(model_path)
    with open(os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model", "MLmodel")) as f:
        flavor = f.read().split()[1].rstrip(":")
    logging.info("Init complete")


def run(raw_data):
    """
    This function is called for every invocation of the endpoint to perform the actual scoring/prediction.
    In the example we extract the data from the json input and call the scikit-learn model's predict()
    method and return the result back
    """
    logging.info("model 1: request received")
    data = json.loads(raw_data)["data"]
    data = numpy.array(data)
    result = data @ numpy.array(model["coef"]) + model["intercept"]
    logging.info("Request processed")
    return {"flavor": flavor, "result": result.tolist()}
'''

TWO_MODELS_SCORE = '''\
import os

import joblib
import numpy as np
from azureml.core.model import Model
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    global mnist, mnist_v1, diabetes, paths
    # Model.get_model_path gives the registered file (or folder) of the latest version
    mnist_path = Model.get_model_path("mnist")
    mnist = joblib.load(mnist_path)
    mnist_v1 = joblib.load(Model.get_model_path("mnist", version=1))
    diabetes_folder = Model.get_model_path(model_name="diabetes")
    diabetes = joblib.load(os.path.join(diabetes_folder, "model.pkl"))
    # with several models, AZUREML_MODEL_DIR is the folder holding them all
    same = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "mnist", "2", "sklearn_mnist_model.pkl")
    paths = {"mnist": mnist_path, "diabetes": diabetes_folder, "model_dir_file": os.path.isfile(same)}


input_sample = np.array([[1.0, 2.0, 3.0]])
output_sample = np.array([4.0])


@input_schema("data", NumpyParameterType(input_sample))
@output_schema(NumpyParameterType(output_sample))
def run(data):
    def predict(model):
        return (data @ np.array(model["coef"]) + model["intercept"]).tolist()

    return {"mnist": predict(mnist), "mnist_v1": predict(mnist_v1), "diabetes": predict(diabetes), "paths": paths}
'''

MODELS = {  # plain Python objects: a linear model's weights
    "mnist_v1": {"coef": [1.0, 0.0, 0.0], "intercept": 0.5},
    "mnist_v2": {"coef": [0.5, 1.0, 2.0], "intercept": 1.0},
    "diabetes": {"coef": [-1.0, 3.0, 0.25], "intercept": -2.0},
}
ROWS = [[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]]


def _predict(model: dict, rows: list[list[float]] = ROWS) -> list[float]:
    return [sum(c * x for c, x in zip(model["coef"], row)) + model["intercept"] for row in rows]


def _mlflow_folder(folder: Path, model: dict) -> Path:
    folder.mkdir(parents=True)
    joblib.dump(model, folder / "model.pkl")
    (folder / "MLmodel").write_text("flavors:\n  sklearn:\n    pickled_model: model.pkl\n")
    (folder / "conda.yaml").write_text("dependencies:\n- python=3.11\n")
    return folder


def _projects(root: Path) -> dict[str, tuple[Path, list[str]]]:
    """Each project's folder and the build flags naming its models and environment."""
    tutorial = root / "tutorial"
    tutorial.mkdir()
    (tutorial / "score.py").write_text(TUTORIAL_SCORE)
    (tutorial / "requirements.txt").write_text(REQUIREMENTS_TXT)
    joblib.dump(MODELS["mnist_v2"], tutorial / "sklearn_mnist_model.pkl")

    quickstart = root / "quickstart"
    quickstart.mkdir()
    (quickstart / "score.py").write_text(QUICKSTART_SCORE)
    (quickstart / "requirements.txt").write_text(REQUIREMENTS_TXT)
    _mlflow_folder(quickstart / "outputs" / "model", MODELS["diabetes"])

    two = root / "two_models"
    (two / "src").mkdir(parents=True)
    (two / "src" / "score.py").write_text(TWO_MODELS_SCORE)
    (two / "src" / "requirements.txt").write_text("this-would-fail-if-read==0.0.0\n")  # --conda-file wins
    (two / "myenv.yml").write_text(MYENV_YML)
    for version in ("1", "2"):
        (two / f"v{version}").mkdir()
        joblib.dump(MODELS[f"mnist_v{version}"], two / f"v{version}" / "sklearn_mnist_model.pkl")
    _mlflow_folder(two / "outputs" / "model", MODELS["diabetes"])
    return {
        "tutorial": (tutorial, ["--model", "sklearn_mnist_model.pkl:mnist:3"]),
        "quickstart": (quickstart, ["--model", "outputs/model"]),
        "two_models": (two / "src", ["--model", "../v1/sklearn_mnist_model.pkl:mnist:1", "--model",
                                     "../v2/sklearn_mnist_model.pkl:mnist:2", "--model", "../outputs/model:diabetes",
                                     "--conda-file", "../myenv.yml"]),
    }


@pytest.fixture(scope="module")
def served(debian_base: str, shared_cache: BlobCache,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[int, str]]]:
    """Each project built and running: its published port and its build's messages."""
    root = tmp_path_factory.mktemp("azureml-projects")
    builds: dict[str, tuple[Path, str]] = {}
    for name, (folder, flags) in _projects(root).items():
        out = root / f"{name}.tar"
        proc = run_cli("build", ".", *flags, "--base", debian_base, "-o", f"oci-archive:{out}:latest",
                       "--cache-dir", str(shared_cache.root), cwd=folder)
        assert proc.returncode == 0, proc.stderr
        builds[name] = (out, proc.stderr)
    with serving({name: out for name, (out, _) in builds.items()}, root, shared_cache.root, BOOT_TIMEOUT_S) as ports:
        yield {name: (port, builds[name][1]) for name, port in ports.items()}


def _score(port: int, body: object) -> object:
    status, headers, answer = http("POST", f"http://127.0.0.1:{port}/score", json.dumps(body).encode(),
                                   {"Content-Type": "application/json"})
    assert status == 200, answer
    assert headers.get("server", "").startswith("nginx")
    return json.loads(answer)


def test_builds_say_the_image_provides_azureml_defaults(served: dict[str, tuple[int, str]]) -> None:
    for name, (_, messages) in served.items():
        assert "azureml-defaults not installed: the image already has what it provides" in messages, name
        assert "installed once: inference-schema[numpy-support]==1.8" in messages, name
    assert "conda channels anaconda, conda-forge ignored" in served["two_models"][1]


def test_single_file_model_read_from_azureml_model_dir(served: dict[str, tuple[int, str]]) -> None:
    assert _score(served["tutorial"][0], {"data": ROWS}) == pytest.approx(_predict(MODELS["mnist_v2"]))


def test_mlflow_style_folder_read_as_model_dir_model_model_pkl(served: dict[str, tuple[int, str]]) -> None:
    answer = _score(served["quickstart"][0], {"data": ROWS})
    assert answer == {"flavor": "sklearn", "result": pytest.approx(_predict(MODELS["diabetes"]))}


def test_two_models_through_get_model_path_with_inference_schema(served: dict[str, tuple[int, str]]) -> None:
    port = served["two_models"][0]
    answer = _score(port, {"data": ROWS})
    assert answer["mnist"] == pytest.approx(_predict(MODELS["mnist_v2"]))
    assert answer["mnist_v1"] == pytest.approx(_predict(MODELS["mnist_v1"]))
    assert answer["diabetes"] == pytest.approx(_predict(MODELS["diabetes"]))
    assert answer["paths"] == {"mnist": "/var/azureml-app/azureml-models/mnist/2/sklearn_mnist_model.pkl",
                               "diabetes": "/var/azureml-app/azureml-models/diabetes/1/model",
                               "model_dir_file": True}
    status, _, swagger = http("GET", f"http://127.0.0.1:{port}/swagger.json")
    assert status == 200
    example = json.loads(swagger)["definitions"]["ServiceInput"]["example"]
    assert example == {"data": [[1.0, 2.0, 3.0]]}
